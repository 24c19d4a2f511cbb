"""``meta.k8s.io/v1`` Tables: the rows ``kubectl get`` prints, computed by the server.

kubectl asks for a Table (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``) and prints
its columns; it no longer knows how to show a Pod by itself. The columns are the CLI's own
(``p2pkube.cli.kinds``), so ``kubectl get`` and ``p2pkube get`` show the same table: one
definition, two faces. Columns kubectl shows only with ``-o wide`` get priority 1; the LABELS
column is left to kubectl (``--show-labels``), which adds it itself.
"""

from __future__ import annotations

from typing import Any

from p2pkube.api.kube.resources import KubeResource
from p2pkube.cli.output import Column

__all__ = ["accepts_table", "include_object", "table_of"]

TABLE_API_VERSION = "meta.k8s.io/v1"
INCLUDE_OBJECT = ("None", "Metadata", "Object")


def accepts_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for a Table (kubectl's does, for get and get -w)."""
    return any(
        "as=Table" in part and "g=meta.k8s.io" in part and "v=v1" in part.replace(" ", "")
        for part in accept.split(",")
    )


def include_object(query: str | None) -> str:
    """The ``includeObject`` parameter: what each row carries (Kubernetes' default: the
    object's metadata, which kubectl needs for ``-L``, ``--show-labels`` and namespaces)."""
    if query in INCLUDE_OBJECT:
        return str(query)
    if query is None or query == "":
        return "Metadata"
    raise ValueError(f"includeObject must be one of {', '.join(INCLUDE_OBJECT)}, not {query!r}")


def _columns(resource: KubeResource) -> list[Column]:
    columns = resource.cli.columns
    narrow = {c.header for c in columns if c.narrow}
    return [c for c in columns if c.header != "LABELS" and not (c.wide and c.header in narrow)]


def _definition(column: Column, first: bool) -> dict[str, Any]:
    return {
        "name": column.header,
        "type": "string",
        "format": "name" if first and column.header == "NAME" else "",
        "description": f"{column.header} as p2pkube get shows it",
        "priority": 1 if column.wide else 0,
    }


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "Object":
        return obj
    if include == "Metadata":
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": TABLE_API_VERSION,
            "metadata": obj.get("metadata", {}),
        }
    return None


def table_of(
    resource: KubeResource,
    items: list[dict[str, Any]],
    *,
    resource_version: str,
    include: str = "Metadata",
    with_definitions: bool = True,
) -> dict[str, Any]:
    """A Table of ``items``. Watch events carry a one-row Table each, without the column
    definitions after the first (as Kubernetes sends them: ``with_definitions``)."""
    columns = _columns(resource)
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": [_cell(column, obj) for column in columns]}
        shown = _row_object(obj, include)
        if shown is not None:
            row["object"] = shown
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": TABLE_API_VERSION,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": (
            [_definition(c, i == 0) for i, c in enumerate(columns)] if with_definitions else []
        ),
        "rows": rows,
    }


def _cell(column: Column, obj: dict[str, Any]) -> Any:
    try:
        value = column.value(obj)
    except (KeyError, TypeError, ValueError, AttributeError):
        return "<unknown>"  # a malformed stored object must not fail the whole listing
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
