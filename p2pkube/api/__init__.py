"""The agent's local API: the HTTP surface the ``p2pkube`` CLI talks to.

``server.ApiServer`` serves it from inside the agent, ``client.ApiClient`` calls it from the
CLI, and ``backend.AgentBackend`` is the narrow interface between the server and the agent.

This module itself holds only the pure helpers both sides need (Kubernetes name and label
syntax, label selectors). They live here rather than in ``server`` so that the CLI can validate
``--label``/``--name`` without importing aiohttp, which would add ~0.3 s to every command.
``ApiServer`` and ``ApiClient`` are re-exported lazily for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from p2pkube.api.client import ApiClient, ApiClientError, ApiError
    from p2pkube.api.server import ApiServer

__all__ = [
    "EMPTY_NAMESPACE",
    "INFO_FILE",
    "TOKEN_FILE",
    "ApiClient",
    "ApiClientError",
    "ApiError",
    "ApiServer",
    "Requirement",
    "dns_label_error",
    "dns_subdomain_error",
    "label_key_error",
    "label_value_error",
    "match_labels",
    "parse_selector",
]

# What the server publishes in the data dir and how URLs spell namespace "" (cluster-scoped).
TOKEN_FILE = "api.token"
INFO_FILE = "api.json"
EMPTY_NAMESPACE = "_"

_LAZY = {
    "ApiServer": "p2pkube.api.server",
    "ApiClient": "p2pkube.api.client",
    "ApiClientError": "p2pkube.api.client",
    "ApiError": "p2pkube.api.client",
}


def __getattr__(name: str) -> Any:
    """Import ``ApiServer``/``ApiClient`` on first use so the package import stays cheap."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


# --- Kubernetes name and label syntax ------------------------------------------------------
# The same rules as Kubernetes (apimachinery/pkg/util/validation), so that manifests and
# selectors written for kubectl mean the same thing here.

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def dns_label_error(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 label (node names, namespaces), or None if it is one."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return f"must be no more than 63 characters (got {len(name)})"
    if not _DNS_LABEL.fullmatch(name):
        return (
            "must consist of lower case alphanumeric characters or '-', and must start and "
            "end with an alphanumeric character (e.g. 'my-name' or '123-abc')"
        )
    return None


def dns_subdomain_error(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 subdomain (most object names), or None if it is one."""
    if not name:
        return "must not be empty"
    if len(name) > 253:
        return f"must be no more than 253 characters (got {len(name)})"
    if not _DNS_SUBDOMAIN.fullmatch(name):
        return (
            "must consist of lower case alphanumeric characters, '-' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'example.com')"
        )
    return None


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None if it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        problem = dns_subdomain_error(prefix)
        if problem is not None:
            return f"prefix part {problem}"
    if not name:
        return "name part must not be empty"
    if len(name) > 63:
        return f"name part must be no more than 63 characters (got {len(name)})"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName' or 'my.name')"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value (may be empty), or None if it is one."""
    if not value:
        return None
    if len(value) > 63:
        return f"must be no more than 63 characters (got {len(value)})"
    if not _QUALIFIED_NAME.fullmatch(value):
        return (
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return None


# --- label selectors -----------------------------------------------------------------------

Operator = Literal["=", "!=", "exists", "!exists"]


@dataclass(frozen=True)
class Requirement:
    """One clause of an equality-based label selector (``k=v``, ``k!=v``, ``k``, ``!k``)."""

    key: str
    op: Operator
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: ``k!=v`` also matches objects without the label."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """Parse ``app=x,tier!=db,debug,!canary``; raise ValueError naming the bad clause.

    Set-based clauses (``in``, ``notin``) are rejected explicitly rather than misparsed,
    because a silently wrong selector would list (or later delete) the wrong objects.
    """
    requirements: list[Requirement] = []
    for raw in text.split(","):
        clause = raw.strip()
        if not clause:
            if text.strip():
                raise ValueError(f"invalid label selector {text!r}: empty clause")
            continue
        if "(" in clause or ")" in clause or re.search(r"\s(not)?in\s", clause):
            raise ValueError(
                f"invalid label selector clause {clause!r}: set-based selectors "
                "(in, notin) are not supported; use k=v, k!=v, k or !k"
            )
        op: Operator
        if "!=" in clause:
            key, value, op = *clause.split("!=", 1), "!="
        elif "==" in clause:
            key, value, op = *clause.split("==", 1), "="
        elif "=" in clause:
            key, value, op = *clause.split("=", 1), "="
        elif clause.startswith("!"):
            key, value, op = clause[1:], "", "!exists"
        else:
            key, value, op = clause, "", "exists"
        key, value = key.strip(), value.strip()
        problem = label_key_error(key)
        if problem is None and op in ("=", "!="):
            problem = label_value_error(value)
            if problem is not None:
                problem = f"value {value!r} {problem}"
        elif problem is not None:
            problem = f"key {key!r}: {problem}"
        if problem is not None:
            raise ValueError(f"invalid label selector clause {clause!r}: {problem}")
        requirements.append(Requirement(key, op, value))
    return tuple(requirements)


def match_labels(selector: str | Sequence[Requirement], labels: Mapping[str, str] | None) -> bool:
    """True if ``labels`` satisfy every clause of ``selector`` (an empty selector matches all).

    Accepts an already parsed selector so a list request parses the query once, not per item.
    """
    requirements = parse_selector(selector) if isinstance(selector, str) else selector
    present = labels or {}
    return all(req.matches(present) for req in requirements)


def containers(obj: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field path, container) of every container of an object, wherever its spec nests pod
    templates (``spec.containers[0]``, ``spec.template.spec.containers[1]``, ...)."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "containers" and isinstance(item, list):
                    found.extend(
                        (f"{path}.containers[{i}]", c)
                        for i, c in enumerate(item)
                        if isinstance(c, dict)
                    )
                else:
                    walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(obj.get("spec"), "spec")
    return found


class ValidationFailed(ValueError):
    """An object that cannot be stored; ``errors`` has one ``path: reason`` per problem.

    Here rather than beside the models so that raising or catching it does not import
    pydantic (the agent loads the models only when it first validates a write)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
