"""Equality-based label selectors (``app=x,tier!=db,debug,!canary``), as kubectl's ``-l``, and
field selectors (``status.phase=Running``), as its ``--field-selector``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from p2pkube.model.names import label_key_error, label_value_error

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


@dataclass(frozen=True)
class FieldRequirement:
    """One clause of a field selector (``status.phase=Running``, ``spec.nodeName!=n1``)."""

    path: str
    equal: bool
    value: str

    def matches(self, obj: Mapping[str, object]) -> bool:
        return (field_text(obj, self.path) == self.value) == self.equal


def parse_field_selector(text: str) -> tuple[FieldRequirement, ...]:
    """Parse kubectl's ``--field-selector`` (``a=b``, ``a==b``, ``a!=b``, comma-separated);
    ValueError names a clause without an operator. Any dotted path of the object may be
    used (Kubernetes allows a few per kind; p2pkube allows more rather than fewer)."""
    requirements: list[FieldRequirement] = []
    for raw in text.split(","):
        clause = raw.strip()
        if not clause:
            continue
        for operator, equal in (("!=", False), ("==", True), ("=", True)):
            path, sep, value = clause.partition(operator)
            if sep:
                requirements.append(FieldRequirement(path.strip(), equal, value.strip()))
                break
        else:
            raise ValueError(f"invalid field selector {clause!r}: use field=value or field!=value")
    return tuple(requirements)


def field_text(obj: Mapping[str, object], path: str) -> str:
    """The value at a dotted path as a field selector compares it: booleans as
    ``true``/``false``, a missing field as the empty string."""
    value: object = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def match_fields(selector: Sequence[FieldRequirement], obj: Mapping[str, object]) -> bool:
    """True if ``obj`` satisfies every clause (an empty selector matches all)."""
    return all(requirement.matches(obj) for requirement in selector)
