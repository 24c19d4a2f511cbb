"""The building blocks of the object models: the base model and the checks of single fields.

Each check returns the value or raises ValueError with the reason; pydantic turns it into
``field.path: reason`` (see :mod:`p2pkube.model.schema`, which assembles the kinds).
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from p2pkube.model.images import DIGEST, IMAGE_SOURCES
from p2pkube.model.names import (
    dns_label_error,
    dns_subdomain_error,
    env_name_error,
    label_key_error,
    label_value_error,
)
from p2pkube.model.quantity import parse_quantity

RESOURCE_NAMES = ("cpu", "memory")


# -- field checks (each returns the value or raises ValueError with the reason) --------------------
def check(problem: str | None, value: Any) -> Any:
    if problem:
        raise ValueError(problem)
    return value


def dns_label(value: str) -> str:
    return check(dns_label_error(value), value)


def dns_subdomain(value: str) -> str:
    return check(dns_subdomain_error(value), value)


def label_map(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        check(label_key_error(key) and f"key {key!r}: {label_key_error(key)}", key)
        check(label_value_error(val) and f"value of {key!r}: {label_value_error(val)}", val)
    return value


def annotation_map(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        check(label_key_error(key) and f"key {key!r}: {label_key_error(key)}", key)
    return value


def env_name(value: str) -> str:
    error = env_name_error(value)
    if error is not None:
        raise ValueError(error)
    return value


def quantity(value: str | int | float) -> str:
    parsed = parse_quantity(value)  # ValueError with the reason
    if parsed < 0:
        raise ValueError("must not be negative")
    return str(value)


def resources(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(RESOURCE_NAMES))
    if unknown:
        raise ValueError(f"unsupported resource {unknown[0]!r} (supported: cpu, memory)")
    return value


def absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if posixpath.normpath(value) != value.rstrip("/") and value != "/":
        raise ValueError("must be a normalised path (no '..', '.', or '//')")
    return value


def relative_path(value: str) -> str:
    """A path inside a volume: relative, normalised, never leaving it (Kubernetes'
    ``items[].path``)."""
    if not value or value.startswith("/"):
        raise ValueError("must be a relative path")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("must be a normalised relative path (no '..', '.', or '//')")
    return value


def module_image(value: str) -> str:
    if DIGEST.match(value):
        return value
    if value.startswith(("http://", "https://")):
        raise ValueError(
            "a URL: p2pkube apply -f downloads and publishes it (the API takes digests only)"
        )
    if value.endswith(".wasm"):
        raise ValueError(
            "a local .wasm path: publish it first (p2pkube publish FILE) or use p2pkube apply "
            "-f, which publishes it (the API takes digests only)"
        )
    raise ValueError(
        "must be a module digest sha256:<64 hex digits> (the API takes digests only; "
        f"p2pkube apply -f also takes {IMAGE_SOURCES}, and publishes it)"
    )


def port_name(value: str) -> str:
    """Kubernetes' IANA_SVC_NAME (what a targetPort or a probe may name a port by)."""
    if not 1 <= len(value) <= 15:
        raise ValueError("must be no more than 15 characters (an IANA service name)")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", value) or "--" in value:
        raise ValueError(
            "must contain only lowercase letters, digits and '-', must start and end with a "
            "letter or digit, and must not contain '--' (an IANA service name)"
        )
    if not re.search(r"[a-z]", value):
        raise ValueError("must contain at least one letter (an IANA service name)")
    return value


def tcp_only(value: str) -> str:
    if value != "TCP":
        raise ValueError(
            f"{value!r} is not supported: handler pods answer HTTP over TCP (supported: TCP)"
        )
    return value


def http_only(value: str) -> str:
    if value != "HTTP":
        raise ValueError(
            f"{value!r} is not supported: a handler is probed in-cluster over plain HTTP "
            "(supported: HTTP)"
        )
    return value


def header_name(value: str) -> str:
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        raise ValueError("must be an HTTP header field name (RFC 9110 token)")
    return value


def probe_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in " \r\n"):
        raise ValueError("must be an absolute URL path starting with '/', without spaces")
    return value


def port_ref(value: int | str) -> int | str:
    """A port by number (1-65535) or by IANA_SVC_NAME (Kubernetes' IntOrString)."""
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError("must be between 1 and 65535, inclusive")
        return value
    return port_name(value)


DnsLabel = Annotated[str, AfterValidator(dns_label)]
DnsSubdomain = Annotated[str, AfterValidator(dns_subdomain)]
Quantity = Annotated[str | int | float, AfterValidator(quantity)]
ResourceList = Annotated[dict[str, Quantity], AfterValidator(resources)]
AbsolutePath = Annotated[str, AfterValidator(absolute_path)]
RelativePath = Annotated[str, AfterValidator(relative_path)]


class Model(BaseModel):
    """camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )
