"""The Kubernetes API face (issue 15) as a client library sees it: the official Python client
(``kubernetes`` from PyPI, unchanged, with only a kubeconfig from ``p2pkube kubeconfig``) and
raw requests for what the client hides (Tables, bookmarks, Status bodies).

The real ``ApiServer`` runs on 127.0.0.1 in a thread of its own over the in-memory backend (the
agent's real object service and watch hub) holding test_cli_workloads' seed: two nodes, a
Deployment ``web`` with ReplicaSets and pods, Jobs, a DaemonSet, events and the ConfigMap
``greeting``. Its Kubernetes API is the HTTPS listener every agent opens.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client, config, watch

from p2pkube.api.kube.settings import KubeApiSettings
from p2pkube.api.server import ApiServer
from p2pkube.cli.main import cli
from tests.memorybackend import MemoryBackend, serving
from tests.test_cli_workloads import seed


class Kube:
    """A served agent and the official client configured for it."""

    def __init__(self, server: ApiServer, data_dir: Path, kubeconfig: Path) -> None:
        self.server = server
        self.data_dir = data_dir
        self.kubeconfig = kubeconfig
        api_client = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.api_client = api_client
        ca = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
        self._ssl = ssl.create_default_context(
            cadata=base64.b64decode(ca["certificate-authority-data"]).decode()
        )

    def raw(
        self,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request with the kubeconfig's token and CA, the body as JSON when given."""
        assert self.server.kube_url is not None
        request = urllib.request.Request(
            self.server.kube_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.server.token}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    data_dir = tmp_path / "data"
    settings = KubeApiSettings(bookmark_seconds=0.5)
    with serving(MemoryBackend("n1"), seed(), data_dir, kube_settings=settings) as (server, _):
        result = CliRunner().invoke(cli, ["kubeconfig", "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(result.stdout)
        yield Kube(server, data_dir, kubeconfig)


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def status_of(body: bytes) -> dict[str, Any]:
    status = json.loads(body)
    assert status["kind"] == "Status" and status["apiVersion"] == "v1", status
    return status


def test_kubeconfig_names_the_node_and_trusts_its_certificate(kube: Kube) -> None:
    doc = yaml.safe_load(kube.kubeconfig.read_text())
    assert doc["current-context"] == "n1"
    assert doc["clusters"][0]["cluster"]["server"] == kube.server.kube_url
    assert doc["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    # The Python client verifies the server against the kubeconfig's CA: no insecure flag.
    names = [n.metadata.name for n in kube.core.list_node().items]
    assert names == ["n1", "n2"]
    # Without the token: 401 as a Status.
    code, _, body = kube.raw("/api/v1/nodes", headers={"Authorization": ""})
    assert code == 401 and status_of(body)["reason"] == "Unauthorized"


def test_create_read_replace_with_resource_versions_and_conflicts(kube: Kube) -> None:
    created = kube.core.create_namespaced_config_map("default", configmap("c1", a="1"))
    first = created.metadata.resource_version
    assert first and created.metadata.uid and created.metadata.creation_timestamp
    read = kube.core.read_namespaced_config_map("c1", "default")
    assert read.metadata.resource_version == first  # unchanged object, same version
    read.data["a"] = "2"
    replaced = kube.core.replace_namespaced_config_map("c1", "default", read)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(first)
    # Writing back the version read before the replace: 409 Conflict, nothing changed.
    read.data["a"] = "3"
    with pytest.raises(client.ApiException) as conflict:
        kube.core.replace_namespaced_config_map("c1", "default", read)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body)["reason"] == "Conflict"
    assert "the object has been modified" in json.loads(conflict.value.body)["message"]
    assert kube.core.read_namespaced_config_map("c1", "default").data == {"a": "2"}
    # Creating it again: 409 AlreadyExists (a different reason than a conflict).
    with pytest.raises(client.ApiException) as exists:
        kube.core.create_namespaced_config_map("default", configmap("c1"))
    assert (exists.value.status, json.loads(exists.value.body)["reason"]) == (409, "AlreadyExists")


def test_errors_are_status_objects_with_kubernetes_reasons(kube: Kube) -> None:
    with pytest.raises(client.ApiException) as missing:
        kube.core.read_namespaced_config_map("nope", "default")
    body = json.loads(missing.value.body)
    assert (missing.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'configmaps "nope" not found'
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}
    with pytest.raises(client.ApiException) as invalid:
        kube.core.create_namespaced_config_map("default", bad)
    body = json.loads(invalid.value.body)
    assert (invalid.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    # A namespace in the body that is not the path's.
    other = {**configmap("c2"), "metadata": {"name": "c2", "namespace": "elsewhere"}}
    code, _, raw = kube.raw("/api/v1/namespaces/default/configmaps", method="POST", body=other)
    assert code == 400 and "does not match the namespace" in status_of(raw)["message"]
    code, _, raw = kube.raw("/api/v1/namespaces/default/widgets")
    assert code == 404 and status_of(raw)["reason"] == "NotFound"


def test_dry_run_checks_everything_and_writes_nothing(kube: Kube) -> None:
    shown = kube.core.create_namespaced_config_map(
        "default", configmap("dry", a="1"), dry_run="All"
    )
    assert shown.metadata.name == "dry" and shown.metadata.uid
    names = [c.metadata.name for c in kube.core.list_namespaced_config_map("default").items]
    assert "dry" not in names
    with pytest.raises(client.ApiException) as invalid:
        kube.core.create_namespaced_config_map(
            "default", {**configmap("x"), "metadata": {"name": "X!"}}, dry_run="All"
        )
    assert invalid.value.status == 422
    kube.core.delete_namespaced_config_map("greeting", "default", dry_run="All")
    assert kube.core.read_namespaced_config_map("greeting", "default").data


def test_selectors_and_lists_carry_a_resource_version(kube: Kube) -> None:
    pods = kube.core.list_namespaced_pod("default", label_selector="app=web")
    assert pods.metadata.resource_version
    assert len(pods.items) == 3
    on_n2 = kube.core.list_namespaced_pod("default", field_selector="spec.nodeName=n2")
    assert [p.spec.node_name for p in on_n2.items] == ["n2"]
    not_n2 = kube.core.list_namespaced_pod("default", field_selector="spec.nodeName!=n2")
    assert len(not_n2.items) == 2
    # kubectl describe's query for an object's events.
    web = kube.apps.read_namespaced_deployment("web", "default")
    events = kube.core.list_namespaced_event(
        "default",
        field_selector=f"involvedObject.name=web,involvedObject.kind=Deployment,"
        f"involvedObject.uid={web.metadata.uid}",
    )
    assert events.items and all(e.involved_object.name == "web" for e in events.items)
    everything = kube.core.list_pod_for_all_namespaces()
    assert len(everything.items) == 3


def test_a_watch_resumes_from_a_list_and_sees_only_what_changed_after(kube: Kube) -> None:
    listed = kube.core.list_namespaced_config_map("default")
    kube.core.create_namespaced_config_map("default", configmap("after", a="1"))
    kube.core.delete_namespaced_config_map("greeting", "default")
    seen = []
    stream = watch.Watch()
    for event in stream.stream(
        kube.core.list_namespaced_config_map,
        "default",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=2,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            stream.stop()
    assert sorted(seen) == [("ADDED", "after"), ("DELETED", "greeting")]


def test_a_watch_without_a_version_lists_first_then_streams_changes(kube: Kube) -> None:
    stream = watch.Watch()
    seen: list[tuple[str, str, str]] = []

    def change() -> None:
        time.sleep(0.3)
        kube.core.create_namespaced_config_map("default", configmap("late", a="1"))

    threading.Thread(target=change).start()
    for event in stream.stream(kube.core.list_namespaced_config_map, "default", timeout_seconds=5):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
        if obj.metadata.name == "late":
            stream.stop()
    assert [s[:2] for s in seen] == [("ADDED", "greeting"), ("ADDED", "late")]
    assert int(seen[1][2]) > int(seen[0][2])


def test_bookmarks_and_410_gone(kube: Kube) -> None:
    listed = kube.core.list_namespaced_config_map("default").metadata.resource_version
    path = (
        "/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true"
        f"&resourceVersion={listed}&timeoutSeconds=2"
    )
    code, _, body = kube.raw(path)
    events = [json.loads(line) for line in body.splitlines()]
    assert code == 200 and events, body
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["object"]["kind"] == "ConfigMap"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(listed)
    # A version from before this node's history: an ERROR event with 410 Expired, in a 200.
    code, _, body = kube.raw("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=5")
    (event,) = [json.loads(line) for line in body.splitlines()]
    assert code == 200 and event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    assert event["object"]["message"].startswith("too old resource version: 5 (")


def test_tables_carry_the_cli_columns(kube: Kube) -> None:
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    code, _, body = kube.raw("/api/v1/namespaces/default/pods", headers={"Accept": accept})
    table = json.loads(body)
    assert code == 200 and table["kind"] == "Table"
    headers = [c["name"] for c in table["columnDefinitions"]]
    assert headers[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    wide = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 1]
    assert "NODE" in wide
    assert len(table["rows"]) == 3
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["rows"][0]["cells"][0] == table["rows"][0]["object"]["metadata"]["name"]


def test_scale_subresource_and_patch(kube: Kube) -> None:
    before = kube.apps.read_namespaced_deployment("web", "default").metadata.generation
    scale = kube.apps.read_namespaced_deployment_scale("web", "default")
    assert (scale.spec.replicas, scale.status.selector) == (3, "app=web")
    kube.apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 5}})
    web = kube.apps.read_namespaced_deployment("web", "default")
    assert web.spec.replicas == 5 and web.metadata.generation == before + 1
    patched = kube.core.patch_namespaced_config_map(
        "greeting", "default", {"metadata": {"labels": {"tier": "x"}}, "data": {"extra": "1"}}
    )
    assert patched.metadata.labels == {"tier": "x"} and patched.data["extra"] == "1"
    assert patched.data["hello"] == "world"


def test_the_status_subresource_changes_only_the_status(kube: Kube) -> None:
    job = kube.raw("/apis/batch/v1/namespaces/default/jobs")[2]
    name = json.loads(job)["items"][0]["metadata"]["name"]
    patched = kube.raw(
        f"/apis/batch/v1/namespaces/default/jobs/{name}/status",
        method="PATCH",
        body={"status": {"active": 7}, "spec": {"parallelism": 9}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched[0] == 200, patched
    shown = json.loads(kube.raw(f"/apis/batch/v1/namespaces/default/jobs/{name}")[2])
    assert shown["status"]["active"] == 7
    assert shown["spec"].get("parallelism") != 9
    code, _, body = kube.raw("/apis/batch/v1/namespaces/default/jobs/nope/status")
    assert code == 404 and status_of(body)["reason"] == "NotFound"


def test_a_watch_list_sends_the_objects_then_the_initial_events_end_bookmark(kube: Kube) -> None:
    path = (
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true"
        "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    )
    code, _, body = kube.raw(path)
    events = [json.loads(line) for line in body.splitlines()]
    assert code == 200
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:2]] == [
        ("ADDED", "greeting"),
        ("BOOKMARK", None),
    ]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_orphaning_deletes_are_refused_and_nothing_is_deleted(kube: Kube) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    code, _, body = kube.raw(path, method="DELETE", body={"propagationPolicy": "Orphan"})
    assert code == 422 and "Orphan is not supported" in status_of(body)["message"]
    code, _, body = kube.raw(path + "?propagationPolicy=Orphan", method="DELETE")
    assert code == 422
    assert kube.apps.read_namespaced_deployment("web", "default").metadata.name == "web"
