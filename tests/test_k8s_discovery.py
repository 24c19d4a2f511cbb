"""Discovery and OpenAPI v3 of the Kubernetes API face, read by the real kubectl.

The routes (``api/kube/discovery.py``, ``api/kube/openapi.py``) run in an aiohttp application
on 127.0.0.1 behind a bearer token, over HTTPS with a certificate made for the test: kubectl
sends a kubeconfig's token only over TLS (client-go's clientcmd reads a user's credentials
only "if we are secure"). A catch-all POST stands in for the object routes, answering the
object back, so that ``kubectl create`` shows which query parameters it decided to send.

``/usr/bin/kubectl`` (1.32) runs with its own HOME and ``--cache-dir`` under the test's tmp
dir; every request the server answers is recorded, so the tests see what kubectl asked for
and what it got, not only what it printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from p2pkube.api import KUBE_CERT_FILE
from p2pkube.api.kube import discovery, openapi
from p2pkube.api.kube.discovery import (
    aggregated_discovery,
    api_group_list,
    api_resource_list,
    discovered,
    discovery_routes,
    negotiate,
    storage_version_hash,
)
from p2pkube.api.kube.openapi import build_documents, document_path, openapi_routes, schema_name
from p2pkube.api.kube.resources import RESOURCES, GroupVersion, by_kind, served_in
from p2pkube.model.k8sschema import definitions
from tests.kubectl import KUBECTL, https_api, requires_kubectl

TOKEN = "discovery-test-token"
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

pytestmark = requires_kubectl


# --- the server and kubectl ---------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request the server answered."""

    method: str
    path: str
    """With the query string."""
    accept: str
    status: int
    content_type: str


@dataclass
class Api:
    url: str
    home: Path
    kubeconfig: Path
    ca_file: Path
    seen: list[Seen] = field(default_factory=list)
    created: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    """(path, query) of every POST kubectl made."""

    async def kubectl(self, *args: str, check: bool = True) -> tuple[str, str]:
        """Run kubectl; (stdout, stderr)."""
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.home / 'cache'}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin")},
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        stdout, stderr = out.decode(), err.decode()
        if check:
            assert process.returncode == 0, (args, stdout, stderr)
        return stdout, stderr

    def paths(self) -> list[str]:
        return [seen.path.partition("?")[0] for seen in self.seen]


def _application(api: Api) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            response: web.StreamResponse = web.json_response({"kind": "Status"}, status=401)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        accept = request.headers.get("Accept", "")
        content_type = response.headers.get("Content-Type", "")
        api.seen.append(
            Seen(request.method, request.path_qs, accept, response.status, content_type)
        )
        return response

    async def create(request: web.Request) -> web.Response:
        """Stands in for the object routes: the object, answered back."""
        api.created.append((request.path, dict(request.query)))
        return web.json_response(await request.json(), status=201)

    app = web.Application(middlewares=[record])
    app.add_routes([*discovery_routes(), *openapi_routes(), web.post("/{path:.*}", create)])
    return app


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    home = tmp_path / "home"
    home.mkdir()
    api = Api(
        url="", home=home, kubeconfig=tmp_path / "kubeconfig", ca_file=tmp_path / KUBE_CERT_FILE
    )
    async with https_api(_application(api), tmp_path, TOKEN) as (url, _kubeconfig):
        api.url = url
        yield api


def _table(output: str) -> list[dict[str, str]]:
    """kubectl's table as rows keyed by column (columns start where their header does)."""
    header, *lines = output.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [
        {name: line[start:end].strip() for name, (start, end) in zip(names, bounds, strict=True)}
        for line in lines
    ]


def _flat(text: str) -> str:
    """Words only: kubectl wraps descriptions at 80 columns."""
    return " ".join(text.split())


# --- kubectl ------------------------------------------------------------------------------------


async def test_api_resources_lists_the_table_from_aggregated_discovery(api: Api) -> None:
    out, err = await api.kubectl("api-resources", "-v=6")
    # metrics.k8s.io's nodes and pods share the core kinds' plurals, as with metrics-server.
    rows = {(row["NAME"], row["APIVERSION"]): row for row in _table(out)}
    assert set(rows) == {(resource.plural, resource.api_version) for resource in RESOURCES}
    for resource in RESOURCES:
        assert rows[resource.plural, resource.api_version] == {
            "NAME": resource.plural,
            "SHORTNAMES": ",".join(resource.short_names),
            "APIVERSION": resource.api_version,
            "NAMESPACED": str(resource.namespaced).lower(),
            "KIND": resource.kind,
        }
    # One request for /api and one for /apis, each answered with the aggregated document:
    # no request per group/version, neither in kubectl's log nor at the server (over TLS it
    # asks for /version first).
    discovery_requests = [seen for seen in api.seen if seen.path.startswith("/api")]
    assert [seen.path.partition("?")[0] for seen in discovery_requests] == ["/api", "/apis"]
    for seen in discovery_requests:
        assert seen.accept.startswith(AGGREGATED_V2), seen
        assert (seen.status, seen.content_type) == (200, AGGREGATED_V2)
    assert not re.search(r"GET \S+/apis?/[^?\s]+", err), err


async def test_api_versions_and_categories(api: Api) -> None:
    out, _ = await api.kubectl("api-versions")
    assert out.split() == sorted(gv.api_version for gv in discovered())
    out, _ = await api.kubectl("api-resources", "--categories=all", "-o", "name")
    in_all = {f"{r.plural}.{r.group}" if r.group else r.plural for r in RESOURCES if r.categories}
    assert set(out.split()) == in_all


async def test_version_is_accepted_without_a_skew_warning(api: Api) -> None:
    out, err = await api.kubectl("version")
    assert "Server Version: v1.32.0+p2pkube." in out
    assert "WARNING" not in err and "error" not in err.lower(), err
    out, _ = await api.kubectl("version", "-o", "json")
    server = json.loads(out)["serverVersion"]
    assert (server["major"], server["minor"]) == ("1", "32")


async def test_explain_prints_kubernetes_descriptions(api: Api) -> None:
    schemas = definitions()
    out, _ = await api.kubectl("explain", "pods.spec.containers")
    assert out.startswith("KIND:       Pod\nVERSION:    v1\n"), out
    assert "FIELD: containers <[]Container>" in out
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert _flat(containers["description"]) in _flat(out)
    assert re.search(r"^  image\t<string>", out, re.M), out

    out, _ = await api.kubectl("explain", "deployment.spec.strategy", "--recursive")
    assert out.startswith("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n"), out
    strategy = schemas["io.k8s.api.apps.v1.DeploymentStrategy"]["description"]
    assert _flat(strategy) in _flat(out)
    assert "  rollingUpdate\t<RollingUpdateDeployment>\n    maxSurge\t<IntOrString>\n" in out

    out, _ = await api.kubectl("explain", "cronjob")
    assert out.startswith("GROUP:      batch\nKIND:       CronJob\nVERSION:    v1\n"), out
    assert _flat(schemas["io.k8s.api.batch.v1.CronJob"]["description"]) in _flat(out)
    assert "spec\t<CronJobSpec>" in out


async def test_explain_blobs(api: Api) -> None:
    out, _ = await api.kubectl("explain", "blobs")
    assert out.startswith("GROUP:      p2pkube.io\nKIND:       Blob\nVERSION:    v1\n"), out
    assert "named by its digest" in _flat(out)
    assert "spec\t<BlobSpec>" in out and "status\t<BlobStatus>" in out
    out, _ = await api.kubectl("explain", "blob.spec.chunks")
    assert "FIELD: chunks <[]string>" in out


async def test_kubectl_finds_server_side_validation_and_dry_run(api: Api) -> None:
    manifests = api.home / "objects.yaml"
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        {"apiVersion": "p2pkube.io/v1", "kind": "Blob", "metadata": {"name": "b"}},
    ]
    manifests.write_text(yaml.safe_dump_all(objects))
    _, err = await api.kubectl("create", "-f", str(manifests), "--dry-run=server")
    assert "warning" not in err.lower(), err
    assert [path for path, _ in api.created] == [
        "/api/v1/namespaces/default/configmaps",
        "/apis/apps/v1/namespaces/default/deployments",
        "/apis/p2pkube.io/v1/blobs",
    ]
    for _, query in api.created:  # what QueryParamVerifierV3 allows it to send
        assert query["fieldValidation"] == "Strict" and query["dryRun"] == "All", query


async def test_kubectl_caches_openapi_by_hash(api: Api) -> None:
    await api.kubectl("explain", "pods")
    first = [seen for seen in api.seen if seen.path.startswith("/openapi/v3/api/v1?hash=")]
    assert [seen.status for seen in first] == [200]
    api.seen.clear()
    await api.kubectl("explain", "pods.spec")
    # The index is asked again (and answered again: it has no hash); the document at a
    # hashed URL is immutable, read from kubectl's HTTP cache without asking.
    assert "/openapi/v3" in api.paths()
    assert "/openapi/v3/api/v1" not in api.paths(), api.seen


def _python_client_discovery(api: Api) -> dict[str, Any]:
    """What the official Python client learns: its generated APIs and its DynamicClient,
    which reads the legacy documents one group/version at a time."""
    from kubernetes import client, dynamic

    configuration = client.Configuration()
    configuration.host = api.url
    configuration.ssl_ca_cert = str(api.ca_file)
    configuration.api_key = {"authorization": f"Bearer {TOKEN}"}
    with client.ApiClient(configuration) as api_client:
        found = dynamic.DynamicClient(api_client).resources
        deployments = found.get(api_version="apps/v1", kind="Deployment")
        return {
            "version": client.VersionApi(api_client).get_code().git_version,
            "groups": [g.name for g in client.ApisApi(api_client).get_api_versions().groups],
            "core": client.CoreApi(api_client).get_api_versions().versions,
            "deployments": (deployments.namespaced, deployments.short_names),
            "subresources": sorted(deployments.subresources),
            "po": found.get(short_names=["po"]).kind,
            "blobs": found.get(api_version="p2pkube.io/v1", kind="Blob").namespaced,
        }


async def test_the_python_client_reads_the_legacy_documents(api: Api) -> None:
    learnt = await asyncio.to_thread(_python_client_discovery, api)
    assert learnt == {
        "version": discovery.version_info()["gitVersion"],
        "groups": ["apps", "batch", "metrics.k8s.io", "p2pkube.io"],
        "core": ["v1"],
        "deployments": (True, ["deploy"]),
        "subresources": ["scale", "status"],
        "po": "Pod",
        "blobs": False,
    }
    paths = set(api.paths())
    assert {"/version/", "/api/", "/apis/", "/api/v1", "/apis/apps/v1"} <= paths, paths


# --- the documents ------------------------------------------------------------------------------


def test_negotiation_follows_the_accept_header() -> None:
    client_go = f"{AGGREGATED_V2},{AGGREGATED_V2.replace('v=v2', 'v=v2beta1')},application/json"
    assert negotiate(client_go) == "v2"
    assert negotiate(AGGREGATED_V2.replace("v=v2", "v=v2beta1") + ",application/json") == "v2beta1"
    assert negotiate("application/json;as=Table;g=meta.k8s.io;v=v1,application/json") == "legacy"
    assert negotiate("application/json;q=0.5," + AGGREGATED_V2) == "v2"
    assert negotiate("") == negotiate("*/*") == negotiate("application/json") == "legacy"
    assert negotiate("application/vnd.kubernetes.protobuf") is None


def test_aggregated_discovery_says_what_the_legacy_documents_say() -> None:
    """Both forms, compared the way client-go turns the aggregated one into the other
    (``discovery.SplitGroupsAndResources``): name, scope, kind with its group, verbs."""
    legacy = set()
    for gv in discovered():
        for entry in api_resource_list(gv)["resources"]:
            group = entry.get("group", gv.group)
            verbs = tuple(entry["verbs"])
            legacy.add((gv, entry["name"], entry["namespaced"], group, entry["kind"], verbs))
    split = set()
    documents = [aggregated_discovery(core=True), aggregated_discovery(core=False)]
    for group in (item for document in documents for item in document["items"]):
        for version in group["versions"]:
            assert version["freshness"] == "Current"
            gv = GroupVersion(group["metadata"].get("name", ""), version["version"])
            for resource in version["resources"]:
                namespaced = resource["scope"] == "Namespaced"
                entries = [(resource["resource"], resource)] + [
                    (f"{resource['resource']}/{sub['subresource']}", sub)
                    for sub in resource.get("subresources", [])
                ]
                for name, entry in entries:
                    kind = entry["responseKind"]
                    assert kind["version"] == ("v1" if name != resource["resource"] else gv.version)
                    verbs = tuple(entry["verbs"])
                    split.add((gv, name, namespaced, kind["group"], kind["kind"], verbs))
    assert split == legacy


def test_legacy_documents() -> None:
    core = api_resource_list(GroupVersion("", "v1"))
    entries = {entry["name"]: entry for entry in core["resources"]}
    assert [e["name"] for e in core["resources"]] == sorted(entries)
    assert entries["pods"]["storageVersionHash"] == "xPOwRZ+Yhw8="  # kube-apiserver's
    assert entries["pods"]["categories"] == ["all"]
    assert entries["pods/eviction"] == {
        "name": "pods/eviction",
        "singularName": "",
        "namespaced": True,
        "group": "policy",
        "version": "v1",
        "kind": "Eviction",
        "verbs": ["create"],
    }
    assert "group" not in entries["pods/log"]
    apps = {e["name"]: e for e in api_resource_list(GroupVersion("apps", "v1"))["resources"]}
    assert apps["deployments/scale"]["kind"] == "Scale"
    assert apps["deployments/scale"]["group"] == "autoscaling"
    deployment = by_kind("Deployment")
    assert deployment is not None
    assert apps["deployments"]["storageVersionHash"] == storage_version_hash(deployment)
    groups = api_group_list()["groups"]
    assert [g["name"] for g in groups] == ["apps", "batch", "metrics.k8s.io", "p2pkube.io"]
    assert groups[0]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    # Only group/versions with resources of their own: an empty one is never cached by
    # client-go, which would download discovery again on every run.
    assert GroupVersion("policy", "v1") not in discovered()
    assert all(served_in(gv) for gv in discovered())


@pytest.fixture(scope="module")
def documents() -> openapi.OpenApiDocuments:
    return build_documents()


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_openapi_documents_are_self_contained_openapi_3(
    documents: openapi.OpenApiDocuments,
) -> None:
    index = json.loads(documents.index.body)["paths"]
    assert set(index) == {document_path(gv) for gv in discovered()}
    for path, document in documents.by_path.items():
        assert index[path]["serverRelativeURL"] == f"/openapi/v3/{path}?hash={document.hash}"
        content = json.loads(document.body)
        assert content["openapi"].startswith("3.0")
        schemas = content["components"]["schemas"]
        for node in _walk(content):
            if not isinstance(node, dict):
                continue
            ref = node.get("$ref")
            if ref is not None:  # every reference resolves, and stands alone
                assert ref.removeprefix("#/components/schemas/") in schemas, (path, ref)
                assert set(node) == {"$ref"}, node
            assert not isinstance(node.get("type"), list), node
            assert node.get("additionalProperties", True) is not False, node


def test_openapi_kinds_and_operations(documents: openapi.OpenApiDocuments) -> None:
    for resource in RESOURCES:
        content = json.loads(documents.by_path[document_path(resource.group_version)].body)
        schemas, paths = content["components"]["schemas"], content["paths"]
        gvk = {"group": resource.group, "kind": resource.kind, "version": resource.version}
        kind = schemas[schema_name(resource.group, resource.version, resource.kind)]
        assert gvk in kind["x-kubernetes-group-version-kind"]
        assert "enum" not in kind["properties"]["kind"]
        prefix = f"{resource.base_path}/namespaces/{{namespace}}" if resource.namespaced else ""
        collection = f"{prefix or resource.base_path}/{resource.plural}"
        assert paths[collection]["get"]["x-kubernetes-group-version-kind"] == gvk
        item = paths[f"{collection}/{{name}}"]
        assert ("patch" in item) == ("patch" in resource.verbs)
        assert ("delete" in item) == ("delete" in resource.verbs)
    # kubectl's QueryParamVerifierV3 takes the first PATCH operation of a kind it finds: each
    # one must carry fieldValidation (and dryRun, which server-side dry-run needs).
    for document in documents.by_path.values():
        for path_item in json.loads(document.body)["paths"].values():
            patch = path_item.get("patch")
            if patch and patch["x-kubernetes-action"] == "patch":
                names = {p["name"] for p in patch["parameters"] if p["in"] == "query"}
                assert {"fieldValidation", "dryRun", "fieldManager"} <= names


def test_openapi_keeps_kubernetes_extensions(documents: openapi.OpenApiDocuments) -> None:
    core = json.loads(documents.by_path["api/v1"].body)
    schemas, paths = core["components"]["schemas"], core["paths"]
    ports = schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "containerPort"
    assert ports["x-kubernetes-patch-strategy"] == "merge"
    assert ports["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.ContainerPort"}
    metadata = schemas["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]
    assert metadata["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    eviction = paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
    assert eviction["x-kubernetes-group-version-kind"] == {
        "group": "policy",
        "kind": "Eviction",
        "version": "v1",
    }
    assert "io.k8s.api.policy.v1.Eviction" in schemas
    log = paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]
    assert {p["name"] for p in log["parameters"]} >= {"container", "follow", "tailLines"}
    apps = json.loads(documents.by_path["apis/apps/v1"].body)
    scale = apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Scale"
    assert "io.k8s.api.autoscaling.v1.Scale" in apps["components"]["schemas"]


async def test_etags_hashes_and_negotiation_over_http() -> None:
    app = web.Application()
    app.add_routes([*discovery_routes(), *openapi_routes()])
    async with TestClient(TestServer(app)) as client:
        legacy = await client.get("/apis", headers={"Accept": "application/json"})
        assert legacy.headers["Content-Type"] == "application/json"
        assert (await legacy.json())["kind"] == "APIGroupList"
        aggregated = await client.get("/apis", headers={"Accept": AGGREGATED_V2})
        assert aggregated.headers["Content-Type"] == AGGREGATED_V2
        assert (await aggregated.json())["apiVersion"] == "apidiscovery.k8s.io/v2"
        assert aggregated.headers["Vary"] == "Accept"
        etag = aggregated.headers["ETag"]
        again = await client.get("/apis", headers={"Accept": AGGREGATED_V2, "If-None-Match": etag})
        assert again.status == 304
        refused = await client.get(
            "/api", headers={"Accept": "application/vnd.kubernetes.protobuf"}
        )
        assert refused.status == 406

        index = await (await client.get("/openapi/v3")).json()
        url = index["paths"]["apis/batch/v1"]["serverRelativeURL"]
        current = await client.get(url)
        assert current.headers["Cache-Control"] == "public, immutable"
        assert current.headers["ETag"] == f'"{url.rpartition("=")[2]}"'
        assert "Expires" in current.headers
        unhashed = await client.get("/openapi/v3/apis/batch/v1")
        assert "Cache-Control" not in unhashed.headers
        stale = await client.get("/openapi/v3/apis/batch/v1?hash=0", allow_redirects=False)
        assert (stale.status, stale.headers["Location"]) == (301, url)

        version = await (await client.get("/version")).json()
        assert version["gitVersion"] == discovery.version_info()["gitVersion"]
