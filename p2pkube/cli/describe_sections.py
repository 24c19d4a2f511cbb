"""What every ``describe`` text shares: the Name/Namespace/Labels/Annotations head, tables
(conditions, events), times, and :class:`Lookup` for the related objects a describer shows.

Each describer (describe_pods.py, describe_workloads.py, describe_nodes.py) writes its kind's
own lines between these, in kubectl's order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any

from p2pkube.api.client import ApiClient
from p2pkube.cli.common import DEFAULT_NAMESPACE
from p2pkube.cli.kinds import event_last_seen, event_message, event_source
from p2pkube.cli.output import field, format_age
from p2pkube.cli.tabwriter import Writer
from p2pkube.model.timestamps import parse_datetime

_EPOCH = datetime.min.replace(tzinfo=UTC)
EVENTS_RULE = ("----", "------", "----", "----", "-------")
"""The dashes under kubectl's Events headers (four under ``Age``, as kubectl prints them)."""


def format_time(ts: Any) -> str:
    """kubectl's describe time (Go's RFC1123Z, local time): ``Tue, 01 Dec 2026 15:50:10 +0000``;
    ``<unknown>`` if unreadable."""
    then = parse_datetime(ts)
    if then is None:
        return "<unknown>"
    return then.astimezone().strftime("%a, %d %b %Y %H:%M:%S %z")


def header(
    w: Writer, obj: dict[str, Any], *lines: tuple[str, Any] | None, namespaced: bool = True
) -> None:
    """The lines every description opens with: Name, Namespace (unless the kind is
    cluster-scoped), the kind's own ``lines`` (None ones left out), Labels, Annotations."""
    meta = obj.get("metadata") or {}
    w.line(0, "Name:", meta.get("name"))
    if namespaced:
        w.line(0, "Namespace:", meta.get("namespace"))
    for line in lines:
        if line is not None:
            w.line(0, *line)
    mapping(w, "Labels", meta.get("labels"))
    mapping(w, "Annotations", meta.get("annotations"), ": ")


def mapping(w: Writer, title: str, values: Any, separator: str = "=") -> None:
    """A map, one ``key=value`` (labels) or ``key: value`` (annotations) per line, sorted;
    ``<none>`` when empty."""
    items = sorted(values.items()) if isinstance(values, dict) else []
    if not items:
        w.line(0, f"{title}:", "<none>")
        return
    for i, (key, value) in enumerate(items):
        w.line(0, f"{title}:" if i == 0 else "", f"{key}{separator}{value}")


def table(
    w: Writer,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    rule: bool | Sequence[str] = True,
) -> None:
    """A table at level 1: the headers, dashes under them (as long as each header, or the
    ``rule`` given; none if ``rule`` is False), then the rows."""
    w.line(1, *headers)
    if rule is True:
        w.line(1, *("-" * len(h) for h in headers))
    elif rule:
        w.line(1, *rule)
    for row in rows:
        w.line(1, *row)


def conditions_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed entries of ``status.conditions``."""
    return [c for c in field(obj, "status.conditions") or [] if isinstance(c, dict)]


def conditions(w: Writer, obj: dict[str, Any], fields: Sequence[str], *, rule: bool = True) -> None:
    """The Conditions table of ``fields`` (``type``, ``status``, ``reason``, ``message``);
    nothing when the object has no condition."""
    found = conditions_of(obj)
    if found:
        w.line(0, "Conditions:")
        headers = [f.capitalize() for f in fields]
        table(w, headers, ([c.get(f, "") for f in fields] for c in found), rule=rule)


def bool_text(value: Any) -> str:
    """Go's ``%t``."""
    return "True" if value else "False"


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in field(obj, "metadata.ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def controlled_by(w: Writer, obj: dict[str, Any]) -> None:
    """``Controlled By: Kind/name``, when the object has a controller."""
    ref = controller_ref(obj)
    if ref is not None:
        w.line(0, "Controlled By:", f"{ref.get('kind')}/{ref.get('name')}")


def pods_status(pods: list[dict[str, Any]]) -> str:
    """kubectl's ``N Running / N Waiting / N Succeeded / N Failed`` of a workload's pods."""
    phases = [str(field(p, "status.phase") or "Pending") for p in pods]
    return (
        f"{phases.count('Running')} Running / {phases.count('Pending')} Waiting / "
        f"{phases.count('Succeeded')} Succeeded / {phases.count('Failed')} Failed"
    )


def events(w: Writer, found: list[dict[str, Any]] | None) -> None:
    """The Events table a description ends with (nothing for --show-events=false), with
    kubectl's ``AGE (xN over M)`` for repeats."""
    if found is None:
        return
    if not found:
        w.line(0, "Events:", "<none>")
        return
    w.line(0, "Events:")
    table(w, ("Type", "Reason", "Age", "From", "Message"), map(_event_row, found), rule=EVENTS_RULE)


def _event_row(event: dict[str, Any]) -> list[Any]:
    count = event.get("count") or 1
    if isinstance(count, int) and count > 1:
        age = (
            f"{format_age(event.get('lastTimestamp'))} (x{count} over "
            f"{format_age(event.get('firstTimestamp'))})"
        )
    else:
        age = format_age(event.get("firstTimestamp") or event_last_seen(event))
    source, message = event_source(event), event_message(event)
    return [event.get("type") or "Normal", event.get("reason") or "", age, source, message]


@dataclass
class Lookup:
    """Related objects (events, pods, replica sets), each kind listed once per namespace."""

    client: ApiClient
    show_events: bool = True
    _lists: dict[tuple[str, str | None], list[dict[str, Any]]] = dataclass_field(
        default_factory=dict
    )

    def objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        key = (kind, namespace)
        if key not in self._lists:
            self._lists[key] = self.client.list_objects(kind, namespace)
        return self._lists[key]

    def events(self, obj: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The events about ``obj``, oldest first; None when --show-events=false."""
        if not self.show_events:
            return None
        meta = obj.get("metadata") or {}
        uid, namespace = meta.get("uid"), meta.get("namespace") or ""
        found = [
            e
            for e in self.objects("Event", namespace)
            if (field(e, "involvedObject.uid") == uid and uid)
            or (
                not field(e, "involvedObject.uid")
                and field(e, "involvedObject.kind") == obj.get("kind")
                and field(e, "involvedObject.name") == meta.get("name")
            )
        ]
        return sorted(found, key=lambda e: parse_datetime(event_last_seen(e)) or _EPOCH)

    def owned(self, kind: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """Objects of ``kind`` whose controller is ``owner``."""
        uid = field(owner, "metadata.uid")
        return [
            o
            for o in self.objects(kind, field(owner, "metadata.namespace") or DEFAULT_NAMESPACE)
            if (controller_ref(o) or {}).get("uid") == uid and uid
        ]
