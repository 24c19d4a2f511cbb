"""Taints and tolerations, as Kubernetes matches them (pure functions over plain dicts).

A node's ``spec.taints`` repel pods; a pod's ``spec.tolerations`` let it stay or go there
anyway. Shared by placement (filters and scores), the controllers (NoExecute eviction), the
object service (a cordon is also the ``node.kubernetes.io/unschedulable:NoSchedule`` taint)
and the CLI; no pydantic here (the schema validates, :mod:`p2pkube.model.schema`).

Matching is Kubernetes' ``Toleration.ToleratesTaint``: an effect, when given, must be the
taint's; a key, when given, must be the taint's; ``Exists`` matches any value, ``Equal`` (the
default) the taint's value. An empty key with ``Exists`` tolerates every taint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from p2pkube.model.timestamps import parse_time

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"
EFFECTS = (NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE)

UNSCHEDULABLE_KEY = "node.kubernetes.io/unschedulable"
"""The taint a cordoned node carries (``spec.unschedulable: true``), as Kubernetes' node
lifecycle controller adds it; DaemonSet pods tolerate it."""
NOT_READY_KEY = "node.kubernetes.io/not-ready"
UNREACHABLE_KEY = "node.kubernetes.io/unreachable"

Taint = Mapping[str, Any]
Toleration = Mapping[str, Any]


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Whether one toleration tolerates one taint (Kubernetes' ``ToleratesTaint``)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def tolerating(tolerations: Iterable[Toleration], taint: Taint) -> Toleration | None:
    """The first of ``tolerations`` that tolerates ``taint`` (None: the taint is not)."""
    return next((t for t in tolerations if tolerates(t, taint)), None)


def first_untolerated(
    taints: Iterable[Taint], tolerations: Sequence[Toleration], effects: Iterable[str]
) -> Taint | None:
    """The first taint with one of ``effects`` that no toleration tolerates."""
    wanted = set(effects)
    for taint in taints:
        if taint.get("effect") in wanted and tolerating(tolerations, taint) is None:
            return taint
    return None


def count_untolerated(
    taints: Iterable[Taint], tolerations: Sequence[Toleration], effect: str
) -> int:
    return sum(
        1 for t in taints if t.get("effect") == effect and tolerating(tolerations, t) is None
    )


def taint_text(taint: Taint) -> str:
    """``key=value:Effect`` (``key:Effect`` without a value), as kubectl writes a taint."""
    value = taint.get("value") or ""
    return f"{taint.get('key')}{'=' + value if value else ''}:{taint.get('effect')}"


def taint_brace(taint: Taint) -> str:
    """``{key: value}``, as kube-scheduler's TaintToleration filter names a taint."""
    return f"{{{taint.get('key')}: {taint.get('value') or ''}}}"


def unschedulable_taint(time_added: str | None = None) -> dict[str, Any]:
    taint: dict[str, Any] = {"key": UNSCHEDULABLE_KEY, "effect": NO_SCHEDULE}
    if time_added:
        taint["timeAdded"] = time_added
    return taint


def node_taints(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A Node object's taints that are well formed (a key and an effect), in order."""
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, Mapping) else None
    if not isinstance(taints, list):
        return []
    return [
        dict(t)
        for t in taints
        if isinstance(t, Mapping)
        and isinstance(t.get("key"), str)
        and t.get("effect") in EFFECTS
        and isinstance(t.get("value", ""), str)
    ]


def pod_tolerations(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A pod spec's tolerations (well-formed mappings only)."""
    found = spec.get("tolerations")
    if not isinstance(found, list):
        return []
    return [dict(t) for t in found if isinstance(t, Mapping)]


def noexecute_deadline(
    taints: Iterable[Taint], tolerations: Sequence[Toleration], since: float | None = None
) -> float | None:
    """When a pod on a node with these taints must go (seconds since the epoch; ``0.0``:
    now), or None when it may stay for good.

    Kubernetes' taint manager: a NoExecute taint no toleration tolerates evicts at once; a
    tolerated one evicts after the ``tolerationSeconds`` of the first toleration that
    tolerates it (none: never; 0 or less: at once). Kubernetes counts them from when its
    taint manager saw the taint and the pod together; here from the later of the taint's
    ``timeAdded`` and ``since`` (the pod's creation), read from the objects, so that every
    scheduler computes the same moment, and a pod placed on the node after the taint still
    gets its whole ``tolerationSeconds`` (not evicted as soon as it is placed). A NoExecute
    taint without a readable ``timeAdded`` (the API always sets one) counts from ``since``.
    The earliest of the taints' moments wins.
    """
    deadline: float | None = None
    for taint in taints:
        if taint.get("effect") != NO_EXECUTE:
            continue
        toleration = tolerating(tolerations, taint)
        if toleration is None:
            return 0.0
        seconds = toleration.get("tolerationSeconds")
        if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, int | float):
            continue
        added = parse_time(taint.get("timeAdded"))
        start = max((t for t in (added, since) if t is not None), default=0.0)
        moment = 0.0 if seconds <= 0 else start + float(seconds)
        deadline = moment if deadline is None else min(deadline, moment)
    return deadline


DAEMON_TOLERATIONS: tuple[dict[str, Any], ...] = (
    {"key": NOT_READY_KEY, "operator": "Exists", "effect": NO_EXECUTE},
    {"key": UNREACHABLE_KEY, "operator": "Exists", "effect": NO_EXECUTE},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": NO_SCHEDULE},
    {"key": UNSCHEDULABLE_KEY, "operator": "Exists", "effect": NO_SCHEDULE},
)
"""What Kubernetes' DaemonSet controller adds to every daemon pod
(``AddOrUpdateDaemonPodTolerations``): a daemon runs on cordoned nodes too."""


def with_daemon_tolerations(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A daemon pod's spec: its own tolerations, then those of ``DAEMON_TOLERATIONS`` it
    does not have already."""
    own = pod_tolerations(spec)
    extra = [dict(t) for t in DAEMON_TOLERATIONS if dict(t) not in own]
    return {**spec, "tolerations": own + extra}
