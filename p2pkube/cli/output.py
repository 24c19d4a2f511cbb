"""kubectl-like output for the CLI: tables, ``-o wide|json|yaml|name``, AGE.

A :class:`Resource` is a kind with its names and :class:`Column` s; every one the CLI can show
is declared once in cli/kinds.py. ``render`` (a whole table) and ``RowPrinter`` (row by row,
for ``get -w``) do the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from tabulate import DataRow, TableFormat, tabulate

from p2pkube.model.timestamps import parse_datetime

__all__ = [
    "OUTPUT_FORMATS",
    "Column",
    "Resource",
    "RowPrinter",
    "dump",
    "field",
    "format_age",
    "format_selector",
    "format_size",
    "human_duration",
    "name_of",
    "object_name",
    "render",
    "render_status",
    "short_digest",
    "shown_columns",
    "table",
    "to_list",
    "utc_now",
]

OUTPUT_FORMATS = ("wide", "json", "yaml", "name")

# tabulate's "plain" format with kubectl's 3-space column gap instead of 2.
_KUBECTL = TableFormat(
    lineabove=None,
    linebelowheader=None,
    linebetweenrows=None,
    linebelow=None,
    headerrow=DataRow("", "   ", ""),
    datarow=DataRow("", "   ", ""),
    padding=0,
    with_header_hide=None,
)


def name_of(obj: dict[str, Any]) -> str:
    """``metadata.name``, "" if there is none."""
    return str(field(obj, "metadata.name", ""))


def field(obj: dict[str, Any], path: str, default: Any = None) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``, or ``default`` where any step is missing."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return default
        current = current[part]
    return current


@dataclass(frozen=True)
class Column:
    """One table column: an uppercase header and how to get the cell from an object."""

    header: str
    value: Callable[[dict[str, Any]], Any]
    wide: bool = False  # shown only with -o wide
    narrow: bool = False  # shown only without -o wide (wide has a fuller twin column)


@dataclass(frozen=True)
class Resource:
    """A kind the CLI can list, get and (if ``deletable``) delete."""

    kind: str
    names: tuple[str, ...]  # plural first, as `get` prints and accepts them
    namespaced: bool
    columns: tuple[Column, ...]
    undeletable: str = ""
    """Why ``delete`` refuses this kind (empty: it can be deleted)."""
    sort_key: Callable[[dict[str, Any]], Any] | None = None
    """Order of ``get``'s rows (default: namespace, then name)."""
    watchable: bool = True
    """Whether ``get -w`` can follow it (the agent serves /v1/watch for the kind)."""

    @property
    def plural(self) -> str:
        """What kubectl says in messages (``configmaps "x" not found``)."""
        return self.names[0]

    @property
    def singular(self) -> str:
        """What kubectl says in ``-o name`` and ``deleted`` lines (``configmap/x``)."""
        return self.kind.lower()

    def sort(self, items: list[dict[str, Any]]) -> None:
        """Sort ``items`` in place the way ``get`` lists them."""
        items.sort(key=lambda o: (field(o, "metadata.namespace", ""), name_of(o)))
        if self.sort_key is not None:
            items.sort(key=self.sort_key)  # stable: ties stay by namespace and name


# --- AGE -------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 3m12s, 15m, 5h10m, 20h, 3d4h, 40d, 2y30d."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"  # clock skew beyond kubectl's 1 s tolerance
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        return f"{minutes}m{secs % 60}s" if secs % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = divmod(hours // 24, 365)
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def format_age(ts: str | None, now: datetime | None = None) -> str:
    """AGE of an RFC 3339 timestamp (``2026-11-27T07:00:00Z``); ``<unknown>`` if unreadable."""
    then = parse_datetime(ts)
    if then is None:
        return "<unknown>"
    return human_duration(((now or utc_now()) - then).total_seconds())


def utc_now() -> datetime:
    """The CLI's clock for ages and durations (tests freeze this module's ``datetime``)."""
    return datetime.now(UTC)


# --- rendering -------------------------------------------------------------------------------


def to_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``kind: List`` wrapper kubectl prints for ``-o json|yaml`` of several objects."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": list(items),
        "metadata": {"resourceVersion": ""},
    }


def dump(obj: Any, output: str) -> str:
    """JSON (kubectl's 4-space indent) or YAML, keys in the order the object has them."""
    if output == "json":
        return json.dumps(obj, indent=4, ensure_ascii=False)
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned, borderless table with 3-space gaps and no trailing spaces."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    # Headers go in as the first row: tabulate would pad real headers by 2 extra characters.
    text = tabulate(
        [list(headers), *cells],
        tablefmt=_KUBECTL,
        disable_numparse=True,
        stralign="left",
    )
    return "\n".join(line.rstrip() for line in text.splitlines())


def render(
    objs: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    output: str = "",
    *,
    single: bool = False,
) -> str:
    """Format objects as kubectl would for ``-o output`` ("" is the default table).

    ``single`` means the user named one object: JSON/YAML then show the object itself rather
    than a List. An empty table renders as "" so the caller can say "No resources found".
    """
    if output in ("json", "yaml"):
        return dump(objs[0] if single and len(objs) == 1 else to_list(objs), output)
    if output == "name":
        return "\n".join(object_name(o) for o in objs)
    if output not in ("", "wide"):
        raise ValueError(f"unknown output format {output!r}")
    if not objs:
        return ""
    shown = shown_columns(columns, output)
    return table([c.header for c in shown], [[c.value(o) for c in shown] for o in objs])


def shown_columns(columns: Sequence[Column], output: str) -> list[Column]:
    """The columns a table shows for ``-o output`` ("" or "wide")."""
    wide = output == "wide"
    return [c for c in columns if (wide or not c.wide) and not (wide and c.narrow)]


def object_name(obj: dict[str, Any]) -> str:
    """``kind/name`` as ``-o name`` prints it (``deployment/web``)."""
    return f"{str(obj.get('kind', '')).lower()}/{field(obj, 'metadata.name', '')}"


class RowPrinter:
    """Table rows printed one at a time (``get -w``): the header once, then each row padded
    to the widest cell seen so far in its column, so rows line up while cells do not grow
    and ``awk``/``cut`` can split them on runs of spaces either way."""

    def __init__(self, headers: Sequence[str], gap: str = "   ") -> None:
        self.headers = list(headers)
        self.widths = [len(h) for h in headers]
        self.gap = gap
        self.started = False

    def seed(self, rows: Sequence[Sequence[Any]]) -> None:
        """Widen the columns for rows already printed another way (the first table)."""
        for row in rows:
            self._widen([_text(c) for c in row])
        self.started = True

    def lines(self, row: Sequence[Any]) -> list[str]:
        """The line(s) to print for ``row``: the header first, the first time."""
        cells = [_text(c) for c in row]
        self._widen(cells)
        out = []
        if not self.started:
            self.started = True
            out.append(self._line(self.headers))
        out.append(self._line(cells))
        return out

    def _widen(self, cells: Sequence[str]) -> None:
        for i, cell in enumerate(cells):
            self.widths[i] = max(self.widths[i], len(cell))

    def _line(self, cells: Sequence[str]) -> str:
        return self.gap.join(c.ljust(w) for c, w in zip(cells, self.widths, strict=True)).rstrip()


def _text(cell: Any) -> str:
    return "" if cell is None else str(cell)


def render_status(status: dict[str, Any]) -> str:
    """An agent's free-form status: ``key: value`` lines, then a table per list of records.

    The agent decides what status() holds and will keep adding to it, so this knows no field
    names: scalars print as ``key: value``, nested maps indent, and every list of records
    (neighbours, known nodes) becomes a table titled by its path, e.g. ``mesh.neighbours (2):``.
    Long hex ids are cut to 12 characters in tables, as ``get nodes -o wide`` does; ``-o json``
    shows them whole.
    """
    lines: list[str] = []
    tables: list[str] = []
    _status_lines(status, "", "", lines, tables)
    return "\n".join(lines + tables)


def _status_lines(
    mapping: dict[str, Any], path: str, indent: str, lines: list[str], tables: list[str]
) -> None:
    flat = {k: v for k, v in mapping.items() if not _is_records(v) and not _is_map(v)}
    width = max((len(k) + 1 for k in flat), default=0)
    lines.extend(f"{indent}{k + ':':<{width}} {_cell(v)}" for k, v in flat.items())
    for key, value in mapping.items():
        if _is_map(value):
            lines.append(f"{indent}{key}:")
            _status_lines(value, f"{path}{key}.", indent + "  ", lines, tables)
        elif _is_records(value):
            headers: dict[str, None] = {}
            for record in value:
                headers.update(dict.fromkeys(record))
            tables.append(f"\n{path}{key} ({len(value)}):")
            tables.append(
                table(
                    [h.upper() for h in headers],
                    [[_short(_cell(r.get(h))) for h in headers] for r in value],
                )
            )


def _is_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


_HEX = frozenset("0123456789abcdef")


def _short(text: str) -> str:
    return text[:12] if len(text) > 16 and set(text) <= _HEX else text


def _cell(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- cells ----------------------------------------------------------------------------------


def format_size(size: Any, sep: str = "") -> str:
    """Decimal units as docker prints image sizes: ``512B``, ``64.2kB``, ``8.39MB``."""
    if not isinstance(size, int | float) or isinstance(size, bool) or size < 0:
        return "<unknown>"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        text = f"{int(value)}" if unit == "B" else f"{value:.3g}"
        if (value < 1000 and "e" not in text) or unit == "TB":
            return f"{text}{sep}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def short_digest(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits, as ``get blobs`` shows a blob's name."""
    algorithm, _, hex_digits = digest.partition(":")
    return f"{algorithm}:{hex_digits[:12]}" if hex_digits else digest


def format_selector(labels: Any) -> str:
    """``a=b,c=d`` (sorted) or ``<none>``, as kubectl prints a selector or node selector."""
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
