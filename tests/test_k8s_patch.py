"""PATCH as kubectl users rely on it: the three patch types the API server takes (and a simple
server-side apply), applied to Kubernetes-shaped objects without a cluster.

The strategic merge cases check the behaviour of Kubernetes' ``strategicpatch`` package with
its patch metadata read from Kubernetes' schemas: containers merge by name, env by name,
finalizers as a set, tolerations are replaced, and the directives kubectl sends. The patches
marked "sent by kubectl" were captured from kubectl v1.32 talking to a stub server.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from p2pkube.api.kube.patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MAX_JSON_PATCH_OPERATIONS,
    MERGE_PATCH,
    PATCH_CONTENT_TYPES,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
)
from p2pkube.api.status import ApiProblem
from p2pkube.model.k8sschema import kind_schema

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def deployment() -> dict[str, Any]:
    """A live Deployment as the API server returns it: two containers, a rolling update."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "1b6f7d0e-0000-4000-8000-000000000001",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "finalizers": ["example.com/a"],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "web:1",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
                        },
                        {"name": "sidecar", "image": "log:1"},
                    ],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                    "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
                    "nodeSelector": {"disk": "ssd", "zone": "a"},
                },
            },
        },
        "status": {"replicas": 2},
    }


def configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"},
        "data": {"a": "1", "b": "2"},
    }


def smp(current: dict[str, Any], patch: Any) -> dict[str, Any]:
    return apply_patch(current, json.dumps(patch).encode(), STRATEGIC_MERGE_PATCH)


def merge(current: dict[str, Any], patch: Any) -> dict[str, Any]:
    return apply_patch(current, json.dumps(patch).encode(), MERGE_PATCH)


def jsonpatch(current: dict[str, Any], operations: Any) -> dict[str, Any]:
    return apply_patch(current, json.dumps(operations).encode(), JSON_PATCH)


def refused(code: int, current: dict[str, Any], body: Any, content_type: str) -> str:
    """The message of the PatchError with ``code`` that the patch raises."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(PatchError) as raised:
        apply_patch(current, raw, content_type)
    assert raised.value.code == code, raised.value.message
    return raised.value.message


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(obj)["containers"]}


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


# --- Strategic merge patch ------------------------------------------------------------------


def test_kubectl_patch_of_one_containers_image_keeps_the_rest() -> None:
    patched = smp(
        deployment(),
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "new"}]}}}},
    )
    app = containers(patched)["app"]
    assert app["image"] == "new"
    assert app["env"] == deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert app["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert names(pod_spec(patched)["containers"]) == ["app", "sidecar"]
    assert containers(patched)["sidecar"] == {"name": "sidecar", "image": "log:1"}


def test_env_merges_by_name_and_a_new_element_goes_first_as_in_kubernetes() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                        }
                    ]
                }
            }
        }
    }
    env = containers(smp(deployment(), patch))["app"]["env"]
    # Kubernetes' order without $setElementOrder: the patch's elements first (in its order),
    # an element only the object has before a patched one it preceded (A before B).
    assert env == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]
    added = smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "new"}]}}}})
    assert names(pod_spec(added)["containers"]) == ["new", "app", "sidecar"]


def test_ports_merge_by_container_port_an_integer_key() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "ports": [{"containerPort": 8080, "name": "http"}]}
                    ]
                }
            }
        }
    }
    ports = containers(smp(deployment(), patch))["app"]["ports"]
    assert ports == [{"containerPort": 8080, "protocol": "TCP", "name": "http"}]


def test_patch_delete_removes_a_container_by_name() -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}
    }
    assert names(pod_spec(smp(deployment(), patch))["containers"]) == ["app"]


def test_patch_replace_replaces_a_list_and_a_map() -> None:
    new_list = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}
            }
        }
    }
    assert pod_spec(smp(deployment(), new_list))["containers"] == [{"name": "only", "image": "x"}]
    new_map = {"spec": {"template": {"spec": {"nodeSelector": {"$patch": "replace", "gpu": "y"}}}}}
    assert pod_spec(smp(deployment(), new_map))["nodeSelector"] == {"gpu": "y"}
    emptied = {"spec": {"template": {"spec": {"nodeSelector": {"$patch": "delete"}}}}}
    assert pod_spec(smp(deployment(), emptied))["nodeSelector"] == {}


def test_set_element_order_reorders_a_list() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}
            }
        }
    }
    patched = smp(deployment(), patch)
    assert names(pod_spec(patched)["containers"]) == ["sidecar", "app"]
    assert containers(patched) == containers(deployment())


def test_set_element_order_must_list_the_patched_elements_in_order() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar"}, {"name": "app"}],
                }
            }
        }
    }
    assert "does not match" in refused(400, deployment(), patch, STRATEGIC_MERGE_PATCH)


def test_retain_keys_switching_to_recreate_drops_rolling_update() -> None:
    # What kubectl apply sends when a manifest changes the strategy to Recreate.
    patch = {
        "spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"}}
    }
    assert smp(deployment(), patch)["spec"]["strategy"] == {"type": "Recreate"}
    stray = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}
    assert "retainKeys" in refused(400, deployment(), stray, STRATEGIC_MERGE_PATCH)


def test_retain_keys_in_a_list_element_switches_a_volumes_source() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {"name": "config", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}
                    ]
                }
            }
        }
    }
    assert pod_spec(smp(deployment(), patch))["volumes"] == [{"name": "config", "emptyDir": {}}]


def test_finalizers_merge_as_a_set_and_delete_from_primitive_list() -> None:
    added = smp(deployment(), {"metadata": {"finalizers": ["example.com/b", "example.com/a"]}})
    assert added["metadata"]["finalizers"] == ["example.com/b", "example.com/a"]
    removed = smp(added, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}})
    assert removed["metadata"]["finalizers"] == ["example.com/b"]


def test_labels_set_to_null_are_removed_and_others_merge() -> None:
    patched = smp(deployment(), {"metadata": {"labels": {"tier": None, "team": "payments"}}})
    assert patched["metadata"]["labels"] == {"app": "web", "team": "payments"}
    assert patched["metadata"]["annotations"] == deployment()["metadata"]["annotations"]


def test_a_configmaps_data_merges_as_a_plain_map() -> None:
    patched = smp(configmap(), {"data": {"b": None, "c": "3"}})
    assert patched["data"] == {"a": "1", "c": "3"}


def test_maps_below_additional_properties_merge() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "2"}}}]}
            }
        }
    }
    limits = containers(smp(deployment(), patch))["app"]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "64Mi"}


def test_tolerations_have_no_merge_key_and_are_replaced() -> None:
    patch = {"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}}
    assert pod_spec(smp(deployment(), patch))["tolerations"] == [{"key": "b", "operator": "Exists"}]


def test_a_service_merges_ports_by_port() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}],
        },
    }
    patched = smp(service, {"spec": {"ports": [{"port": 443, "targetPort": 9443}]}})
    assert patched["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080},
        {"port": 443, "targetPort": 9443},
    ]


def test_values_new_to_the_object_lose_their_nulls_and_directives() -> None:
    patch = {"spec": {"template": {"spec": {"affinity": {"nodeAffinity": None, "x": {"y": 1}}}}}}
    assert pod_spec(smp(deployment(), patch))["affinity"] == {"x": {"y": 1}}
    replaced = {"spec": {"template": {"spec": {"securityContext": {"$patch": "replace", "a": 1}}}}}
    assert pod_spec(smp(deployment(), replaced))["securityContext"] == {"a": 1}
    new_list = {
        "metadata": {"ownerReferences": [{"uid": "u1", "name": "o"}, {"$patch": "replace"}]}
    }
    assert smp(deployment(), new_list)["metadata"]["ownerReferences"] == [
        {"uid": "u1", "name": "o"}
    ]


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, "merge key: name"),
        ({"spec": {"$patch": "bogus"}}, "unknown patch type"),
        (
            {"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}},
            "merging lists cannot yet be specified",
        ),
        ({"spec": {"$setElementOrder/": []}}, "names no field"),
        ({"metadata": {"$setElementOrder/finalizers": [], "finalizers": None}}, "not a list"),
        ({"spec": {"$retainKeys": "type"}}, "retainKeys"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, "primitive list"),
        ({"spec": {"$sortMe": 1}}, "unknown directive"),
    ],
)
def test_malformed_strategic_merge_patches_are_bad_requests(
    patch: dict[str, Any], reason: str
) -> None:
    assert reason in refused(400, deployment(), patch, STRATEGIC_MERGE_PATCH)


def test_a_list_whose_elements_differ_in_type_does_not_apply() -> None:
    patch = {"metadata": {"finalizers": [1]}}
    assert "not identical" in refused(422, deployment(), patch, STRATEGIC_MERGE_PATCH)


def test_strategic_merge_patch_needs_a_kubernetes_kind() -> None:
    blob = {"apiVersion": "p2pkube.io/v1", "kind": "Blob", "metadata": {"name": "b"}}
    refused(415, blob, {"spec": {}}, STRATEGIC_MERGE_PATCH)
    assert merge(blob, {"spec": {"a": 1}})["spec"] == {"a": 1}


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("v1", "Pod"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "Namespace"),
        ("v1", "Node"),
        ("v1", "Event"),
        ("v1", "Endpoints"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
    ],
)
def test_every_kind_p2pkube_serves_has_kubernetes_patch_metadata(
    api_version: str, kind: str
) -> None:
    assert kind_schema(api_version, kind) is not None
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "labels": {"a": "1"}}}
    assert smp(obj, {"metadata": {"labels": {"b": "2"}}})["metadata"]["labels"] == {
        "a": "1",
        "b": "2",
    }


def test_a_job_template_merges_containers_two_levels_down_a_cronjob() -> None:
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": "a", "image": "a:1"}, {"name": "b"}],
                            "restartPolicy": "OnFailure",
                        }
                    }
                }
            },
        },
    }
    patch = {
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:2"}]}}}
            }
        }
    }
    job_pod = smp(cronjob, patch)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job_pod["containers"] == [{"name": "a", "image": "a:2"}, {"name": "b"}]


# --- Patches sent by kubectl ----------------------------------------------------------------


def applied_deployment() -> dict[str, Any]:
    """The live object of the kubectl apply case: applied once (three containers, a rolling
    update, label tier), then defaulted by the server and labelled by someone else."""
    live = deployment()
    live["metadata"]["labels"]["team"] = "payments"
    live["metadata"]["annotations"][LAST_APPLIED] = '{"apiVersion":"apps/v1","kind":"..."}\n'
    pod = pod_spec(live)
    pod["containers"].append({"name": "metrics", "image": "metrics:1"})
    for container in pod["containers"]:
        container["imagePullPolicy"] = "IfNotPresent"
    return live


def test_a_kubectl_apply_three_way_patch() -> None:
    # Sent by kubectl apply for a manifest that changed: replicas 3, label tier gone, strategy
    # Recreate, containers proxy (new), app (image web:2, env B gone, env C new), metrics, with
    # sidecar gone.
    last_applied = (
        '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"labels":'
        '{"app":"web"},"name":"web","namespace":"default"},"spec":{"replicas":3,...}}\n'
    )
    patch = {
        "metadata": {"annotations": {LAST_APPLIED: last_applied}, "labels": {"tier": None}},
        "spec": {
            "replicas": 3,
            "strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "proxy"},
                        {"name": "app"},
                        {"name": "metrics"},
                    ],
                    "containers": [
                        {"image": "envoy:1", "name": "proxy"},
                        {
                            "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                            "env": [
                                {"name": "C", "value": "3"},
                                {"$patch": "delete", "name": "B"},
                            ],
                            "image": "web:2",
                            "name": "app",
                        },
                        {"$patch": "delete", "name": "sidecar"},
                    ],
                }
            },
        },
    }
    patched = smp(applied_deployment(), patch)
    metadata = patched["metadata"]
    assert metadata["labels"] == {"app": "web", "team": "payments"}
    assert metadata["annotations"] == {
        "deployment.kubernetes.io/revision": "1",
        LAST_APPLIED: last_applied,
    }
    assert patched["spec"]["replicas"] == 3
    assert patched["spec"]["strategy"] == {"type": "Recreate"}
    pod = pod_spec(patched)
    assert names(pod["containers"]) == ["proxy", "app", "metrics"]
    app = containers(patched)["app"]
    assert app["image"] == "web:2"
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert app["imagePullPolicy"] == "IfNotPresent"  # what the server defaulted stays
    assert app["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert containers(patched)["proxy"] == {"image": "envoy:1", "name": "proxy"}
    assert pod["tolerations"] == pod_spec(deployment())["tolerations"]
    assert not json.dumps(patched).count('"$')  # no directive is stored


def test_kubectl_set_env_and_set_image() -> None:
    # Sent by `kubectl set env deploy/web -c app D=4`, then `kubectl set image ... app=web:3`.
    order = {"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}]}
    set_env = {
        "spec": {
            "template": {
                "spec": {
                    **order,
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "D"}],
                            "env": [{"name": "D", "value": "4"}],
                            "name": "app",
                        }
                    ],
                }
            }
        }
    }
    set_image = {
        "spec": {"template": {"spec": {**order, "containers": [{"image": "web:3", "name": "app"}]}}}
    }
    patched = smp(smp(deployment(), set_env), set_image)
    assert names(containers(patched)["app"]["env"]) == ["A", "B", "D"]
    assert containers(patched)["app"]["image"] == "web:3"
    assert names(pod_spec(patched)["containers"]) == ["app", "sidecar"]


def test_kubectl_rollout_restart_and_label() -> None:
    # Sent by `kubectl rollout restart deploy/web` (strategic) and by
    # `kubectl label deploy/web tier=backend app- --overwrite` (a JSON merge patch).
    restart = {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-07T13:42:08Z"}
                }
            }
        }
    }
    restarted = smp(deployment(), restart)
    assert restarted["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-07T13:42:08Z"},
    }
    labelled = merge(restarted, {"metadata": {"labels": {"app": None, "tier": "backend"}}})
    assert labelled["metadata"]["labels"] == {"tier": "backend"}


# --- JSON merge patch (RFC 7386) ------------------------------------------------------------


def test_merge_patch_merges_maps_deletes_nulls_and_replaces_lists() -> None:
    patched = merge(
        deployment(),
        {
            "metadata": {"labels": {"tier": None, "new": "x"}},
            "spec": {
                "replicas": 5,
                "template": {"spec": {"containers": [{"name": "only", "image": "x"}]}},
            },
        },
    )
    assert patched["metadata"]["labels"] == {"app": "web", "new": "x"}
    assert patched["spec"]["replicas"] == 5
    assert pod_spec(patched)["containers"] == [{"name": "only", "image": "x"}]
    assert pod_spec(patched)["nodeSelector"] == {"disk": "ssd", "zone": "a"}


def test_merge_patch_drops_nulls_inside_new_values() -> None:
    patched = merge(configmap(), {"binaryData": {"k": None, "j": "eA=="}})
    assert patched["binaryData"] == {"j": "eA=="}


def test_a_merge_patch_is_an_object() -> None:
    assert "JSON object" in refused(400, configmap(), [1], MERGE_PATCH)
    assert "JSON object" in refused(400, configmap(), [1], STRATEGIC_MERGE_PATCH)


# --- JSON patch (RFC 6902) ------------------------------------------------------------------


def test_json_patch_operations_apply_in_order() -> None:
    patched = jsonpatch(
        deployment(),
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:2"},
            {"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "web"},
            {"op": "remove", "path": "/spec/template/spec/containers/1"},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
            {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/layer"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/z"},
        ],
    )
    assert names(pod_spec(patched)["containers"]) == ["app"]
    assert containers(patched)["app"]["image"] == "web:2"
    assert patched["metadata"]["labels"] == {
        "app": "web",
        "app.kubernetes.io/name": "web",
        "copy": "web",
        "layer": "frontend",
    }
    assert patched["metadata"]["finalizers"] == ["example.com/a", "example.com/z"]


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "remove", "path": "/spec/nothing"},
        {"op": "replace", "path": "/metadata/labels/none", "value": "x"},
        {"op": "add", "path": "/spec/template/spec/containers/9", "value": {}},
        {"op": "add", "path": "/spec/template/spec/containers/x", "value": {}},
        {"op": "move", "from": "/nowhere", "path": "/spec/x"},
    ],
)
def test_a_json_patch_that_fails_is_unprocessable(operation: dict[str, Any]) -> None:
    current = deployment()
    refused(
        422, current, [{"op": "add", "path": "/spec/paused", "value": True}, operation], JSON_PATCH
    )
    assert current == deployment()  # nothing half-applied


@pytest.mark.parametrize(
    "operations",
    [
        {"op": "add", "path": "/a", "value": 1},
        [{"op": "frobnicate", "path": "/spec"}],
        [{"path": "/spec"}],
        [{"op": "add", "value": 1}],
        [{"op": "add", "path": "no-slash", "value": 1}],
        [{"op": "add", "path": "/spec/x"}],
        ["replace"],
    ],
)
def test_a_malformed_json_patch_is_a_bad_request(operations: Any) -> None:
    refused(400, deployment(), operations, JSON_PATCH)


def test_a_json_patch_has_a_bounded_number_of_operations() -> None:
    operations = [{"op": "test", "path": "/kind", "value": "Deployment"}]
    refused(413, deployment(), operations * (MAX_JSON_PATCH_OPERATIONS + 1), JSON_PATCH)


# --- Server-side apply (simplified) ---------------------------------------------------------


def test_apply_patch_merges_the_applied_configuration() -> None:
    applied = b"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    checked: 2024-01-01T00:00:00Z
spec:
  replicas: 4
  template:
    spec:
      containers:
      - name: app
        image: web:9
"""
    patched = apply_patch(deployment(), applied, APPLY_PATCH)
    assert patched["spec"]["replicas"] == 4
    assert containers(patched)["app"]["image"] == "web:9"
    assert names(pod_spec(patched)["containers"]) == ["app", "sidecar"]
    assert patched["metadata"]["annotations"]["checked"] == "2024-01-01T00:00:00Z"
    assert patched["metadata"]["namespace"] == "default"


def test_apply_patch_refuses_what_is_not_a_yaml_object() -> None:
    assert "YAML" in refused(400, deployment(), b"spec: [unclosed", APPLY_PATCH)
    assert "YAML" in refused(400, deployment(), b"- a list", APPLY_PATCH)


# --- Every patch type -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH])
@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"a": NaN}'])
def test_a_body_that_is_not_json_is_a_bad_request(content_type: str, body: bytes) -> None:
    assert "not valid JSON" in refused(400, deployment(), body, content_type)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", ""])
def test_other_content_types_are_unsupported(content_type: str) -> None:
    message = refused(415, deployment(), {"spec": {}}, content_type)
    assert all(accepted in message for accepted in PATCH_CONTENT_TYPES)


def test_content_type_parameters_and_case_are_ignored() -> None:
    patched = apply_patch(
        configmap(), b'{"data": {"c": "3"}}', "Application/Merge-Patch+JSON; charset=utf-8"
    )
    assert patched["data"] == {"a": "1", "b": "2", "c": "3"}


def identity_changes(field: str, value: Any) -> dict[str, tuple[Any, Any]]:
    """The same change of ``field`` as each patch type writes it: (body, content type)."""
    path = {"name": "/metadata/name", "namespace": "/metadata/namespace"}.get(field, f"/{field}")
    nested = {"metadata": {field: value}} if field in ("name", "namespace") else {field: value}
    return {
        "json": ([{"op": "replace", "path": path, "value": value}], JSON_PATCH),
        "merge": (nested, MERGE_PATCH),
        "strategic": (nested, STRATEGIC_MERGE_PATCH),
        "apply": (json.dumps(nested).encode(), APPLY_PATCH),
    }


@pytest.mark.parametrize("patch_type", ["json", "merge", "strategic", "apply"])
@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("name", "other", 400),
        ("namespace", "kube-system", 400),
        ("kind", "StatefulSet", 422),
        ("apiVersion", "apps/v2", 422),
    ],
)
def test_a_patch_may_not_change_what_names_the_object(
    patch_type: str, field: str, value: str, code: int
) -> None:
    body, content_type = identity_changes(field, value)[patch_type]
    refused(code, deployment(), body, content_type)


def test_a_patch_that_drops_the_namespace_or_kind_gets_them_back() -> None:
    patched = merge(deployment(), {"kind": None, "metadata": {"namespace": None}})
    assert patched["kind"] == "Deployment"
    assert patched["metadata"]["namespace"] == "default"
    refused(400, deployment(), {"metadata": None}, MERGE_PATCH)  # and with it the name


def test_a_cluster_scoped_object_gets_no_namespace() -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    patched = smp(node, {"metadata": {"namespace": "default", "labels": {"a": "b"}}})
    assert patched["metadata"] == {"name": "n1", "labels": {"a": "b"}}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}}}',
            STRATEGIC_MERGE_PATCH,
        ),
        (b'{"spec": {"template": {"spec": {"nodeSelector": {"zone": "b"}}}}}', MERGE_PATCH),
        (
            b'[{"op": "replace", "path": "/spec/template/spec/nodeSelector/zone", "value": "b"}]',
            JSON_PATCH,
        ),
        (b"spec: {template: {spec: {nodeSelector: {zone: b}}}}", APPLY_PATCH),
    ],
)
def test_the_current_object_is_left_as_it_was(body: bytes, content_type: str) -> None:
    current = deployment()
    patched = apply_patch(current, body, content_type)
    assert current == deployment()
    assert patched != current
    pod_spec(patched)["nodeSelector"]["zone"] = "mutated"
    containers(patched)["app"]["env"].append({"name": "Z"})
    assert current == deployment()  # the result shares nothing with it


def test_a_patch_error_is_an_api_problem_with_kubernetes_reason() -> None:
    with pytest.raises(ApiProblem) as raised:
        jsonpatch(deployment(), [{"op": "test", "path": "/kind", "value": "Pod"}])
    assert (raised.value.code, raised.value.reason) == (422, "Invalid")
    with pytest.raises(ApiProblem) as raised:
        apply_patch(deployment(), b"{}", "text/plain")
    assert raised.value.reason == "UnsupportedMediaType"


def test_deeply_nested_patches_are_refused_not_crashed_on() -> None:
    depth = 5000
    body = ('{"data":' + '{"a":' * depth + '"x"' + "}" * depth + "}").encode()
    for content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        assert "nested too deeply" in refused(400, configmap(), body, content_type)


def test_the_input_document_copy_is_deep() -> None:
    current = deployment()
    snapshot = copy.deepcopy(current)
    smp(current, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}})
    assert current == snapshot
