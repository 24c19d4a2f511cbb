"""Which fields Kubernetes defines, from its published OpenAPI schemas.

A manifest written for Kubernetes carries fields p2pkube does not implement (``imagePullPolicy``,
``securityContext``, ``livenessProbe`` ...). Those are accepted with a warning naming each one;
a field Kubernetes does not define either is a typo and is rejected. Telling the two apart needs
Kubernetes' own field list, which comes from the JSON schemas the ``kubernetes-validate``
package ships (generated from Kubernetes' OpenAPI document, one set per release), never from a
hand-written list.

Only the field *names* are used, by walking the schema along a field's path; p2pkube's own
models (:mod:`p2pkube.model.schema`) do the validation of what it implements. The same schemas
carry how Kubernetes merges each field in a strategic merge patch (the ``x-kubernetes-patch-*``
extensions), which the PATCH verb reads through :func:`kind_schema` and :func:`resolve`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_PACKAGE = "kubernetes_validate"
SCHEMA_FILE = "_definitions.json"

Path = tuple[str | int, ...]
"""A field's path in a document, as pydantic reports it: keys and list indexes."""

Schema = dict[str, Any]
"""One schema of Kubernetes' OpenAPI document as JSON Schema: ``properties``, ``items``,
``additionalProperties``, ``$ref`` and the ``x-kubernetes-*`` extensions."""


@cache
def _definitions() -> tuple[str, dict[str, Any]]:
    """(Kubernetes version, every definition by name) of the newest release shipped."""
    root = resources.files(SCHEMA_PACKAGE).joinpath("kubernetes-json-schema")
    releases = [
        entry.name.removesuffix("-local-strict")
        for entry in root.iterdir()
        if entry.name.startswith("v") and entry.name.endswith("-local-strict")
    ]
    newest = max(releases, key=lambda name: tuple(int(p) for p in name[1:].split(".")))
    text = root.joinpath(f"{newest}-local-strict", SCHEMA_FILE).read_text()
    return newest, json.loads(text)["$defs"]


def kubernetes_release() -> str:
    """The Kubernetes release whose schemas decide (``v1.37.0``)."""
    return _definitions()[0]


def definitions() -> dict[str, Any]:
    """Every definition of :func:`kubernetes_release`, by name (``io.k8s.api.core.v1.Pod``),
    as JSON Schema (``$ref: "#/$defs/NAME"``; loaded once). The API face's OpenAPI documents
    are built from them (``api/kube/openapi.py``). Never modify the result."""
    return _definitions()[1]


def definition_name(api_version: str, kind: str) -> str:
    """The name Kubernetes' schemas give ``kind`` of ``api_version`` (``apps/v1`` Deployment:
    ``io.k8s.api.apps.v1.Deployment``; the core group is ``core``)."""
    group, _, version = api_version.rpartition("/")
    return f"io.k8s.api.{group or 'core'}.{version}.{kind}"


def kind_schema(api_version: str, kind: str) -> Schema | None:
    """Kubernetes' definition of ``kind`` in ``api_version`` (None: not a Kubernetes kind)."""
    return definition(definition_name(api_version, kind))


def resolve(schema: Schema) -> Schema:
    """``schema``, or the definition its ``$ref`` names: a field's schema often only points to
    its type's (``#/$defs/io.k8s.api.core.v1.Container``)."""
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def defines(api_version: str, kind: str, path: Path) -> bool:
    """Whether Kubernetes' ``kind`` (in ``api_version``) has a field at ``path``."""
    schema = kind_schema(api_version, kind)
    if schema is None:
        return False
    for part in path:
        schema = resolve(schema)
        if isinstance(part, int):
            items = schema.get("items")
            if not isinstance(items, dict):
                return False
            schema = items
            continue
        properties = schema.get("properties") or {}
        if part in properties:
            schema = properties[part]
            continue
        values = schema.get("additionalProperties")
        if isinstance(values, dict):  # a map (labels, data): any key is a field
            schema = values
            continue
        return False
    return True


def definition(name: str) -> Schema | None:
    """One of Kubernetes' definitions by its name (``io.k8s.api.core.v1.Pod``), or None."""
    return definitions().get(name)
