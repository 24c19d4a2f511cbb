"""Manifests written for Kubernetes: standard apiVersions, ignored fields warned, typos rejected.

Which fields Kubernetes defines comes from its published schemas (kubernetes-validate); these
tests check what a user applying a Kubernetes manifest sees: the object stored under the
standard apiVersion, one warning per ignored field naming its path, an error naming any field
Kubernetes does not define either.
"""

from __future__ import annotations

from typing import Any

import pytest

from p2pkube.model.errors import ValidationFailed
from p2pkube.model.k8sschema import defines, kubernetes_release
from p2pkube.model.schema import validate_object

DIGEST = "sha256:" + "ab" * 32


def deployment(api: str = "apps/v1", **container: Any) -> dict[str, Any]:
    """Kubernetes' documentation's nginx Deployment, with a module for its image."""
    return {
        "apiVersion": api,
        "kind": "Deployment",
        "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": DIGEST,
                            "ports": [{"containerPort": 80}],
                            **container,
                        }
                    ]
                },
            },
        },
    }


def checked(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    return validate_object(obj, warnings.append), warnings


def test_the_schemas_are_kubernetes_own() -> None:
    assert kubernetes_release().startswith("v1.")
    assert defines("apps/v1", "Deployment", ("spec", "template", "spec", "containers", 0, "name"))
    assert defines("v1", "Pod", ("metadata", "labels", "any-key"))
    assert not defines("v1", "Pod", ("spec", "containers", 0, "imagePullPolcy"))
    assert not defines("p2pkube.io/v1", "Blob", ("spec",))


@pytest.mark.parametrize(
    ("kind", "api"),
    [
        ("Pod", "v1"), ("ConfigMap", "v1"), ("Service", "v1"),
        ("Deployment", "apps/v1"), ("ReplicaSet", "apps/v1"), ("DaemonSet", "apps/v1"),
        ("Job", "batch/v1"),
    ],
)  # fmt: skip
def test_each_kind_takes_its_standard_api_version_and_the_old_alias(kind: str, api: str) -> None:
    for written in (api, "p2pkube.io/v1"):
        with pytest.raises(ValidationFailed) as caught:
            validate_object(
                {"apiVersion": written, "kind": kind, "metadata": {"name": "x"}, "x": 1}
            )
        assert not any(e.startswith("apiVersion") for e in caught.value.errors), caught.value
    wrong = "extensions/v1beta1"
    with pytest.raises(ValidationFailed) as caught:
        validate_object({"apiVersion": wrong, "kind": kind, "metadata": {"name": "x"}})
    assert caught.value.errors == [
        f"apiVersion: must be {api} or p2pkube.io/v1 for a {kind} (got '{wrong}')"
    ]


def test_the_old_alias_is_stored_under_the_standard_api_version() -> None:
    stored, warnings = checked(deployment(api="p2pkube.io/v1"))
    assert stored["apiVersion"] == "apps/v1" and warnings == []


def test_kubernetes_fields_p2pkube_ignores_are_dropped_with_a_warning_each() -> None:
    stored, warnings = checked(
        deployment(
            imagePullPolicy="IfNotPresent",
            securityContext={"runAsNonRoot": True},
            livenessProbe={"httpGet": {"path": "/", "port": 80}},
        )
    )
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert not {"imagePullPolicy", "securityContext", "livenessProbe"} & set(container)
    prefix = "spec.template.spec.containers[0]."
    assert sorted(warnings) == sorted(
        [
            f"{prefix}imagePullPolicy: ignored: a module is a content-addressed blob that nodes "
            "fetch from each other",
            f"{prefix}securityContext: ignored: a wasm module has no Linux user, capabilities "
            "or privileges to set",
            f"{prefix}livenessProbe: ignored: not implemented (readinessProbe is)",
        ]
    )


def test_a_field_kubernetes_does_not_define_is_rejected_with_its_path() -> None:
    with pytest.raises(ValidationFailed) as caught:
        checked(deployment(imagePullPolicy="Always", imagePullPolcy="Always"))
    assert caught.value.errors == ["spec.template.spec.containers[0].imagePullPolcy: unknown field"]


def test_an_ignored_field_does_not_hide_the_other_errors() -> None:
    obj = deployment(imagePullPolicy="Always")
    obj["spec"]["replicas"] = -1
    obj["spec"]["minReadySeconds"] = 5
    with pytest.raises(ValidationFailed) as caught:
        checked(obj)
    assert caught.value.errors == ["spec.replicas: Input should be greater than or equal to 0"]
