"""Kubernetes protobuf bodies: the real kubectl's are decoded to what kubectl itself prints.

A small HTTPS server (discovery, a store of what is created, one node with one pod) records
every body kubectl sends; each protobuf body must decode to the JSON object that
``kubectl ... --dry-run=client -o json`` prints for the same command, which needs no server
and is Kubernetes' own JSON encoding of the object. Drain has no dry-run: its DeleteOptions
(``--disable-eviction``) and Eviction are checked against hand-read expectations; kubectl 1.32
posts the Eviction as JSON, so a protobuf Eviction is built from the table's field numbers.
Hand-built bodies cover the special types, and malformed ones the errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from p2pkube.api.kube import protobuf_table
from p2pkube.api.kube.protobuf import (
    CONTENT_TYPE,
    MAGIC,
    ProtobufError,
    UnknownKindError,
    custom_types_without_form,
    decode_body,
    is_protobuf,
)
from tests.kubectl import KUBECTL, https_api, require_kubectl

IMAGE = "sha256:" + "ab" * 32
NODE = "n1"


# --- a recording API server --------------------------------------------------------------


def _resource(name: str, kind: str, namespaced: bool = True, **extra: Any) -> dict[str, Any]:
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    resource = {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind}
    return resource | {"verbs": verbs} | extra


DISCOVERY: dict[str, list[dict[str, Any]]] = {
    "v1": [
        _resource("configmaps", "ConfigMap"),
        _resource("secrets", "Secret"),
        _resource("namespaces", "Namespace", namespaced=False),
        _resource("nodes", "Node", namespaced=False),
        _resource("services", "Service"),
        _resource("pods", "Pod"),
        _resource("pods/eviction", "Eviction", group="policy", version="v1", verbs=["create"]),
    ],
    "apps/v1": [
        _resource("deployments", "Deployment"),
        _resource("replicasets", "ReplicaSet"),
        _resource("daemonsets", "DaemonSet"),
    ],
    "batch/v1": [_resource("jobs", "Job"), _resource("cronjobs", "CronJob")],
    "policy/v1": [_resource("poddisruptionbudgets", "PodDisruptionBudget")],
}


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: bytes


@dataclass
class FakeApiServer:
    """Serves discovery, remembers created objects (for ``create job --from``), and holds
    node ``n1`` with pod ``default/p`` for drain; records every request with a body."""

    requests: list[Request] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/apis", self._api_groups)
        app.router.add_route("*", "/{path:.*}", self._any)
        return app

    def bodies(self, method: str = "POST") -> list[Request]:
        return [r for r in self.requests if r.method == method]

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    async def _api_groups(self, request: web.Request) -> web.Response:
        groups = []
        for group_version in DISCOVERY:
            if "/" in group_version:
                version = {"groupVersion": group_version, "version": "v1"}
                name = group_version.split("/")[0]
                groups.append({"name": name, "versions": [version], "preferredVersion": version})
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def _any(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.read()
        if body:
            self.requests.append(Request(request.method, path, request.content_type, body))
        group_version = path.removeprefix("/apis/").removeprefix("/api/")
        if request.method == "GET" and group_version in DISCOVERY:
            resources = {"kind": "APIResourceList", "groupVersion": group_version}
            return web.json_response(resources | {"resources": DISCOVERY[group_version]})
        if request.method == "POST":
            created = self._read(request, body)
            metadata = created.setdefault("metadata", {})
            metadata.setdefault("uid", str(uuid.uuid4()))
            name = metadata.get("name") or path.rsplit("/", 2)[-2]
            self.objects[f"{path}/{name}"] = created
            return web.json_response(created, status=201)
        if request.method == "DELETE":
            self.objects.pop(path, None)
            return web.json_response(_status("Success", 200))
        if path == f"/api/v1/nodes/{NODE}":
            return web.json_response(_node())
        if path == "/api/v1/pods":
            return web.json_response(_pod_list(evicted=self._pod_gone()))
        if path == "/api/v1/namespaces/default/pods/p" and not self._pod_gone():
            return web.json_response(_pod_list(evicted=False)["items"][0])
        if path in self.objects:
            return web.json_response(self.objects[path])
        return web.json_response(_status("NotFound", 404), status=404)

    def _read(self, request: web.Request, body: bytes) -> dict[str, Any]:
        if is_protobuf(request.content_type):
            return decode_body(body)
        document: dict[str, Any] = json.loads(body)
        return document

    def _pod_gone(self) -> bool:
        return any(r.path.startswith("/api/v1/namespaces/default/pods/p") for r in self.requests)


def _status(reason: str, code: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason} | {
        "code": code
    }


def _node() -> dict[str, Any]:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": NODE, "uid": "u-node"}}


def _pod_list(evicted: bool) -> dict[str, Any]:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u-rs"}
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "p",
            "namespace": "default",
            "uid": "u-pod",
            "ownerReferences": [owner | {"controller": True}],
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running"},
    }
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": [] if evicted else [pod],
    }


@dataclass
class Kubectl:
    server: FakeApiServer
    kubeconfig: Path

    async def run(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            KUBECTL,
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, f"kubectl {' '.join(args)}: {stderr.decode()}"
        return stdout.decode()


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    require_kubectl()
    server = FakeApiServer()
    async with https_api(server.app(), tmp_path, "test-token") as (_url, kubeconfig):
        yield Kubectl(server, kubeconfig)


# --- kubectl's typed create commands -----------------------------------------------------

CREATE_COMMANDS = {
    name: shlex.split(command)
    for name, command in {
        "configmap": "create configmap c --from-literal=a=1 --from-literal=b=2",
        "secret": "create secret generic s --from-literal=k=v",
        "namespace": "create namespace n",
        "deployment": f"create deployment d --image={IMAGE} --replicas=2 --port=8080",
        "job": "create job j --image=x -- echo hi",
        "cronjob": "create cronjob cj --image=x '--schedule=*/5 * * * *' -- echo hi",
        "service": "create service clusterip svc --tcp=80:8080",
        "deployment-zero": "create deployment z --image=x --replicas=0",
    }.items()
}


def without_null_creation_timestamps(document: Any) -> Any:
    """kubectl 1.32 prints a zero ``creationTimestamp`` as null; the table's types (Kubernetes
    1.36) mark it ``omitzero``, so the decoder leaves it out. Nothing else differs."""
    if isinstance(document, dict):
        return {
            key: without_null_creation_timestamps(value)
            for key, value in document.items()
            if not (key == "creationTimestamp" and value is None)
        }
    if isinstance(document, list):
        return [without_null_creation_timestamps(item) for item in document]
    return document


async def dry_run(kubectl: Kubectl, args: list[str]) -> dict[str, Any]:
    separator = args.index("--") if "--" in args else len(args)
    printed = await kubectl.run(
        *args[:separator], "--dry-run=client", "-o", "json", *args[separator:]
    )
    document: dict[str, Any] = json.loads(printed)
    return without_null_creation_timestamps(document)


async def created_body(kubectl: Kubectl, args: list[str]) -> Request:
    await kubectl.run(*args)
    (request,) = kubectl.server.bodies("POST")[-1:]
    return request


@pytest.mark.parametrize("command", sorted(CREATE_COMMANDS))
async def test_create_bodies_decode_to_what_kubectl_prints(kubectl: Kubectl, command: str) -> None:
    args = CREATE_COMMANDS[command]
    request = await created_body(kubectl, args)
    assert request.content_type == CONTENT_TYPE
    assert request.body.startswith(MAGIC)
    assert decode_body(request.body) == await dry_run(kubectl, args)


async def test_secret_data_is_base64_and_zero_replicas_stay(kubectl: Kubectl) -> None:
    secret = decode_body((await created_body(kubectl, CREATE_COMMANDS["secret"])).body)
    assert secret["data"] == {"k": base64.b64encode(b"v").decode()}
    deployment = decode_body((await created_body(kubectl, CREATE_COMMANDS["deployment-zero"])).body)
    assert deployment["spec"]["replicas"] == 0


async def test_job_from_cronjob(kubectl: Kubectl) -> None:
    await kubectl.run(*CREATE_COMMANDS["cronjob"])
    args = ["create", "job", "manual", "--from=cronjob/cj"]
    job = decode_body((await created_body(kubectl, args)).body)
    assert job == await dry_run(kubectl, args)
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "CronJob" and owner["controller"] is True
    assert job["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}


# --- drain: Eviction and DeleteOptions ---------------------------------------------------

DRAIN = ["drain", NODE, "--grace-period=0", "--timeout=30s"]


EVICTION = {
    "kind": "Eviction",
    "apiVersion": "policy/v1",
    "metadata": {"name": "p", "namespace": "default"},
    # --grace-period=0 sets the pointer to zero: kept, not taken for unset.
    "deleteOptions": {"gracePeriodSeconds": 0},
}


async def test_drain_eviction(kubectl: Kubectl) -> None:
    """kubectl 1.32 posts the Eviction as JSON (only DeleteOptions goes as protobuf); the same
    Eviction in protobuf, as a protobuf client sends it, decodes to the same object."""
    await kubectl.run(*DRAIN)
    (request,) = kubectl.server.bodies("POST")
    assert request.path == "/api/v1/namespaces/default/pods/p/eviction"
    if is_protobuf(request.content_type):
        assert decode_body(request.body) == EVICTION
    else:
        assert without_null_creation_timestamps(json.loads(request.body)) == EVICTION
    metadata = _fields("meta/v1.ObjectMeta", name=b"p", namespace=b"default", creationTimestamp=b"")
    grace = _int_field(_field_number("meta/v1.DeleteOptions", "gracePeriodSeconds"), 0)
    eviction = _fields("policy/v1.Eviction", metadata=metadata, deleteOptions=grace)
    assert decode_body(_envelope("policy/v1", "Eviction", eviction)) == EVICTION


async def test_drain_without_eviction_sends_delete_options(kubectl: Kubectl) -> None:
    await kubectl.run(*DRAIN, "--disable-eviction")
    (request,) = kubectl.server.bodies("DELETE")
    assert request.path == "/api/v1/namespaces/default/pods/p"
    assert request.content_type == CONTENT_TYPE
    assert decode_body(request.body) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
    }


# --- hand-built bodies: the special types and malformed input ----------------------------


def _varint(value: int) -> bytes:
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _string_field(number: int, text: str) -> bytes:
    return _len_field(number, text.encode())


def _envelope(api_version: str, kind: str, raw: bytes, **extra: str) -> bytes:
    type_meta = _string_field(1, api_version) + _string_field(2, kind)
    unknown = _len_field(1, type_meta) + _len_field(2, raw)
    for number, name in ((3, "contentEncoding"), (4, "contentType")):
        if name in extra:
            unknown += _string_field(number, extra[name])
    return MAGIC + unknown


def _field_number(message: str, json_name: str) -> int:
    """A field's number from the generated table, never typed here."""
    (number,) = [row[0] for row in protobuf_table.MESSAGES[message] if row[1] == json_name]
    return number


def _fields(message: str, **values: bytes) -> bytes:
    return b"".join(_len_field(_field_number(message, name), v) for name, v in values.items())


def _pod_body() -> bytes:
    """A Pod with a Time, an IntOrString, a Quantity map and an inlined struct."""
    created = _int_field(1, 1796648400) + _int_field(2, 123_456_789)  # seconds, nanos
    metadata = _fields("meta/v1.ObjectMeta", name=b"p", creationTimestamp=created)
    int_or_string = _int_field(1, 1) + _string_field(3, "http")  # type String, strVal
    http_get = _fields("core/v1.HTTPGetAction", port=int_or_string)
    probe = _fields("core/v1.Probe", ProbeHandler=_fields("core/v1.ProbeHandler", httpGet=http_get))
    limits = _string_field(1, "memory") + _len_field(2, _string_field(1, "64Mi"))  # key, value
    container = _fields(
        "core/v1.Container",
        name=b"c",
        ports=_int_field(_field_number("core/v1.ContainerPort", "containerPort"), 80),
        resources=_len_field(_field_number("core/v1.ResourceRequirements", "limits"), limits),
        livenessProbe=probe,
    )
    spec = _fields("core/v1.PodSpec", containers=container)
    return _envelope("v1", "Pod", _fields("core/v1.Pod", metadata=metadata, spec=spec))


def test_times_quantities_int_or_strings() -> None:
    assert decode_body(_pod_body()) == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "p", "creationTimestamp": "2026-12-07T13:00:00Z"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"memory": "64Mi"}},
                    # ProbeHandler is inlined in Probe, as in Kubernetes' JSON.
                    "livenessProbe": {"httpGet": {"port": "http"}},
                }
            ]
        },
    }


def test_fields_of_a_newer_release_are_skipped() -> None:
    newer = _string_field(999, "x") + _int_field(998, 1)
    body = _envelope("v1", "Namespace", _fields("core/v1.Namespace", metadata=b"\n\x01n") + newer)
    assert decode_body(body) == {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "n"}}


def test_negative_and_packed_numbers() -> None:
    number = _field_number("meta/v1.DeleteOptions", "gracePeriodSeconds")
    body = _envelope("apps/v1", "DeleteOptions", _int_field(number, -1))
    assert decode_body(body)["gracePeriodSeconds"] == -1
    values = _field_number("batch/v1.PodFailurePolicyOnExitCodesRequirement", "values")
    packed = _len_field(values, b"".join(_varint(v) for v in (1, 2, 300)))
    rule = _len_field(
        _field_number("batch/v1.PodFailurePolicyRule", "onExitCodes"), packed
    ) + _string_field(_field_number("batch/v1.PodFailurePolicyRule", "action"), "FailJob")
    policy = _len_field(_field_number("batch/v1.PodFailurePolicy", "rules"), rule)
    spec = _fields("batch/v1.JobSpec", podFailurePolicy=policy)
    job = decode_body(_envelope("batch/v1", "Job", _fields("batch/v1.Job", spec=spec)))
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [{"action": "FailJob", "onExitCodes": {"values": [1, 2, 300]}}]
    }


def test_every_custom_json_type_has_a_form() -> None:
    assert custom_types_without_form() == set()


def test_content_type() -> None:
    assert is_protobuf("application/vnd.kubernetes.protobuf")
    assert is_protobuf("Application/vnd.kubernetes.protobuf; charset=utf-8")
    assert not is_protobuf("application/json")
    assert not is_protobuf(None)


def _malformed() -> Iterator[tuple[str, bytes]]:
    pod = _fields("core/v1.Pod", metadata=_string_field(1, "p"))
    yield "bad magic", b"k8s\x01" + _envelope("v1", "Pod", pod)[4:]
    yield "empty", b""
    yield "truncated varint", MAGIC + b"\x0a\x80"
    yield "truncated length", MAGIC + _len_field(2, pod)[:-1]
    yield "overlong varint", MAGIC + b"\x08" + b"\xff" * 11
    yield "group wire type", MAGIC + b"\x0b"
    yield "field zero", MAGIC + b"\x00\x00"
    yield "string sent as varint", _envelope("v1", "Pod", _int_field(1, 5))
    yield (
        "int sent as bytes",
        _envelope(
            "v1",
            "DeleteOptions",
            _len_field(_field_number("meta/v1.DeleteOptions", "gracePeriodSeconds"), b"x"),
        ),
    )
    yield "bad utf-8", _envelope("v1", "Pod", _len_field(1, _len_field(1, b"\xff\xfe")))
    yield "no kind", MAGIC + _len_field(2, pod)
    yield "gzip", _envelope("v1", "Pod", pod, contentEncoding="gzip")
    yield "json inside", _envelope("v1", "Pod", pod, contentType="application/json")
    yield (
        "bad IntOrString",
        _envelope(
            "v1",
            "Service",
            _fields(
                "core/v1.Service",
                spec=_fields(
                    "core/v1.ServiceSpec",
                    ports=_fields("core/v1.ServicePort", targetPort=_int_field(1, 7)),
                ),
            ),
        ),
    )


@pytest.mark.parametrize(("case", "body"), list(_malformed()), ids=lambda v: str(v)[:24])
def test_malformed_input_raises_protobuf_error(case: str, body: bytes) -> None:
    with pytest.raises(ProtobufError):
        decode_body(body)


def test_damaged_bodies_decode_or_raise_protobuf_error() -> None:
    """Every truncation and a few thousand byte changes of a real-shaped body: a dict or
    ProtobufError, never another exception."""
    body = _pod_body()
    damaged = [body[:length] for length in range(len(body))]
    rng = random.Random(7)
    for _ in range(3000):
        changed = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            changed[rng.randrange(4, len(body))] = rng.randrange(256)
        damaged.append(bytes(changed))
    for data in damaged:
        try:
            assert isinstance(decode_body(data), dict)
        except ProtobufError:
            pass


def test_unknown_kind() -> None:
    with pytest.raises(UnknownKindError, match="StatefulSet in apps/v1"):
        decode_body(_envelope("apps/v1", "StatefulSet", b""))
