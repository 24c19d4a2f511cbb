"""The Kubernetes API's TLS certificate: self-signed for 127.0.0.1, kept in the data dir.

kubectl (client-go) sends no credentials over plain HTTP (kubernetes/kubectl#744), so the
Kubernetes face is served over HTTPS while the p2pkube CLI keeps its plain loopback API. The
certificate is made once per data dir and kept (``kube-apiserver.crt`` and ``.key``, mode
0600), so a kubeconfig written by ``p2pkube kubeconfig`` trusts the node across restarts: it
carries the certificate itself as its ``certificate-authority-data``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2pkube.api import KUBE_CERT_FILE, KUBE_KEY_FILE
from p2pkube.fsutil import write_file_atomically

__all__ = ["certificate_pem", "server_context"]

VALID_DAYS = 3650
"""Ten years: the certificate only ever names 127.0.0.1 and lives in one data dir."""


def _create(data_dir: Path, host: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2pkube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file_atomically(data_dir / KUBE_KEY_FILE, key_pem)
    write_file_atomically(
        data_dir / KUBE_CERT_FILE, certificate.public_bytes(serialization.Encoding.PEM)
    )


def server_context(data_dir: Path, host: str = "127.0.0.1") -> ssl.SSLContext:
    """The TLS context to serve with, making the certificate first if the data dir has none
    (blocking file work: call it in a thread)."""
    if not (data_dir / KUBE_CERT_FILE).is_file() or not (data_dir / KUBE_KEY_FILE).is_file():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create(data_dir, host)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(data_dir / KUBE_CERT_FILE, data_dir / KUBE_KEY_FILE)
    return context


def certificate_pem(data_dir: Path) -> bytes:
    """The certificate a client must trust (a kubeconfig's certificate-authority-data)."""
    return (data_dir / KUBE_CERT_FILE).read_bytes()
