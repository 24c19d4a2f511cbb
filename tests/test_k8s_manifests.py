"""Manifests written as Kubernetes' own documentation writes them, on real agents.

Two agents (separate processes, real aiortc, pycrdt, wasmtime). What is applied follows the
Kubernetes docs' examples (the nginx Deployment, a Pod consuming a ConfigMap and a Secret as
env and as files, a Namespace), with only the image changed to a WebAssembly module; the test
checks what a user sees: apply's output and its ``Warning:`` lines, the pod's output, describe,
and that a Secret's value is nowhere on disk, in a log, an event or describe.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pkube.api import INFO_FILE, TOKEN_FILE
from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import module_cluster, wait_all_ready

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
NAMES = ["a", "b"]
PASSWORD = "39528$vdg7Jb"
"""The value the Secret holds (Kubernetes' docs' example password): searched for everywhere."""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    with module_cluster(tmp_path_factory.mktemp("k8s-manifests") / "cluster", request) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = ["--memory", "1Gi"]
        for name in NAMES:
            cluster.start_agent(name)
        wait_all_ready(cluster, NAMES)
        yield cluster


def apply(mesh: LocalCluster, node: str, directory: Path, text: str) -> tuple[str, str]:
    """``p2pkube apply -f`` of ``text`` written beside a copy of micropython.wasm."""
    if not (directory / "micropython.wasm").exists():
        shutil.copy(BUILD / "micropython.wasm", directory / "micropython.wasm")
    path = directory / "manifest.yaml"
    path.write_text(text)
    result = mesh.cli(node, "apply", "-f", str(path))
    return result.stdout, result.stderr


NGINX_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 2
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: micropython.wasm
        args: ["-c", "import time\\nwhile True: time.sleep(1)"]
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 80
        securityContext:
          allowPrivilegeEscalation: false
"""


def test_the_nginx_deployment_of_the_kubernetes_docs(mesh: LocalCluster, tmp_path: Path) -> None:
    out, err = apply(mesh, "a", tmp_path, NGINX_DEPLOYMENT)
    assert "deployment.apps/nginx-deployment created" in out or (
        "deployment/nginx-deployment created" in out
    ), out
    prefix = "Warning: spec.template.spec.containers[0]."
    warnings = [line for line in err.splitlines() if line.startswith("Warning:")]
    assert sorted(warnings) == [
        f"{prefix}imagePullPolicy: ignored: a module is a content-addressed blob that nodes "
        "fetch from each other",
        f"{prefix}securityContext: ignored: a wasm module has no Linux user, capabilities or "
        "privileges to set",
    ], err
    stored = json.loads(mesh.cli("b", "get", "deployment", "nginx-deployment", "-o", "json").stdout)
    assert stored["apiVersion"] == "apps/v1"
    assert "imagePullPolicy" not in stored["spec"]["template"]["spec"]["containers"][0]
    typo = NGINX_DEPLOYMENT.replace("imagePullPolicy", "imagePullPolcy")
    (tmp_path / "typo.yaml").write_text(typo)
    rejected = mesh.cli("a", "apply", "-f", str(tmp_path / "typo.yaml"), check=False)
    assert rejected.returncode != 0
    assert "spec.template.spec.containers[0].imagePullPolcy: unknown field" in rejected.stderr


SECRET_CONSUMERS = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: dev
---
apiVersion: v1
kind: Secret
metadata:
  name: test-secret
  namespace: dev
data:
  username: {base64.b64encode(b"my-app").decode()}
stringData:
  password: "{PASSWORD}"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: special-config
  namespace: dev
data:
  special.how: very
---
apiVersion: batch/v1
kind: Job
metadata:
  name: secret-test
  namespace: dev
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: test-container
        image: micropython.wasm
        args:
        - -c
        - |
          import os
          print("SECRET_USERNAME", os.getenv("SECRET_USERNAME"))
          print("SPECIAL_LEVEL_KEY", os.getenv("SPECIAL_LEVEL_KEY"))
          print("files", sorted(os.listdir("/etc/secret-volume")))
          print("length", len(open("/etc/secret-volume/password").read()))
          print("same", open("/etc/secret-volume/password").read() == os.getenv("password"))
        env:
        - name: SECRET_USERNAME
          valueFrom:
            secretKeyRef:
              name: test-secret
              key: username
        - name: SPECIAL_LEVEL_KEY
          valueFrom:
            configMapKeyRef:
              name: special-config
              key: special.how
        envFrom:
        - secretRef:
            name: test-secret
          prefix: ""
        volumeMounts:
        - name: secret-volume
          mountPath: /etc/secret-volume
          readOnly: true
      volumes:
      - name: secret-volume
        secret:
          secretName: test-secret
"""


def test_a_secret_reaches_a_pod_as_env_and_files_and_nowhere_else(
    mesh: LocalCluster, tmp_path: Path
) -> None:
    out, _err = apply(mesh, "a", tmp_path, SECRET_CONSUMERS)
    assert "namespace/dev created" in out and "secret/test-secret created" in out, out
    assert [line.split()[:2] for line in mesh.cli("b", "get", "ns").stdout.splitlines()] == [
        ["NAME", "STATUS"],
        ["default", "Active"],
        ["dev", "Active"],
    ]

    def logs() -> list[str] | None:
        status = mesh.cli("b", "get", "jobs", "-n", "dev", "-o", "json").stdout
        items = json.loads(status)["items"]
        if not items or not items[0].get("status", {}).get("succeeded"):
            return None
        (pod,) = mesh.cli("b", "get", "pods", "-n", "dev", "-o", "name").stdout.split()
        return mesh.cli("b", "logs", "-n", "dev", pod).stdout.splitlines()

    lines = wait_until(logs, 60, what="the Job's pod to succeed")
    assert lines == [
        "SECRET_USERNAME my-app",
        "SPECIAL_LEVEL_KEY very",
        "files ['password', 'username']",
        f"length {len(PASSWORD)}",
        "same True",
    ]
    described = mesh.cli("a", "describe", "secret", "test-secret", "-n", "dev").stdout
    assert re.search(rf"^password:\s+{len(PASSWORD)} bytes$", described, re.M), described
    assert re.search(r"^username:\s+6 bytes$", described, re.M), described
    shown = json.loads(
        mesh.cli("b", "get", "secret", "test-secret", "-n", "dev", "-o", "json").stdout
    )
    assert base64.b64decode(shown["data"]["password"]).decode() == PASSWORD
    assert "sealedData" not in shown

    # The value is on no disk (the data dirs hold it sealed; secret volumes live in memory),
    # in no agent log, no event and no describe.
    needle = PASSWORD.encode()
    for path in mesh.root.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"{path} holds the Secret's value"
    events = mesh.cli("a", "get", "events", "-n", "dev", "-o", "json").stdout
    pod_text = mesh.cli("a", "describe", "pods", "-n", "dev").stdout
    assert PASSWORD not in events and PASSWORD not in pod_text and PASSWORD not in described

    # Deleting the namespace deletes what is in it.
    assert mesh.cli("a", "delete", "namespace", "dev").stdout == 'namespace "dev" deleted\n'
    wait_until(
        lambda: "dev" not in mesh.cli("b", "get", "ns", "-o", "name").stdout,
        30,
        what="namespace dev to be gone",
    )
    for kind in ("secrets", "configmaps", "jobs", "pods"):
        assert mesh.cli("b", "get", kind, "-n", "dev", "-o", "name").stdout == ""
    refused = mesh.cli("a", "delete", "namespace", "default", check=False)
    assert refused.returncode != 0
    assert 'namespaces "default" is forbidden: this namespace may not be deleted' in (
        refused.stderr
    )


SERVICE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myapp
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: MyApp
  template:
    metadata:
      labels:
        app.kubernetes.io/name: MyApp
    spec:
      containers:
      - name: myapp
        image: echo.wasm
        ports:
        - containerPort: 9376
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""


def test_the_service_of_the_kubernetes_docs_reaches_its_pods(
    mesh: LocalCluster, tmp_path: Path
) -> None:
    shutil.copy(BUILD / "echo.wasm", tmp_path / "echo.wasm")
    out, err = apply(mesh, "a", tmp_path, SERVICE)
    assert "deployment/myapp created" in out and "service/my-service created" in out, out
    assert "Warning" not in err, err

    def endpoints() -> list[str] | None:
        listed = json.loads(mesh.cli("b", "get", "endpoints", "my-service", "-o", "json").stdout)
        addresses = [a for s in listed.get("subsets") or [] for a in s.get("addresses") or []]
        return addresses if len(addresses) == 2 else None

    wait_until(endpoints, 60, what="two ready endpoints of my-service")
    info = json.loads((mesh.root / "b" / INFO_FILE).read_text())
    token = (mesh.root / "b" / TOKEN_FILE).read_text().strip()
    request = urllib.request.Request(
        info["url"] + "/api/v1/namespaces/default/services/my-service/proxy/hello?x=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read().decode()
    assert answer.status == 200
    assert "path: /hello" in body and "query: x=1" in body, body
