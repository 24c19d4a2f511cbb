"""kubectl's JSONPath templates (``-o jsonpath=...``) and custom columns, over jsonpath-ng.

A kubectl template is text with actions in braces: ``{.items[*].metadata.name}``,
``{range .items[*]}...{end}``, ``{"\\n"}``. Only that template layer is written here: the
braces, ``range``/``end``, quoted literals, kubectl's field syntax (``\\.`` inside a key, keys
with ``/``, an optional leading ``$``) and how kubectl prints what an action found. Each path
is translated to jsonpath-ng's syntax and evaluated by jsonpath-ng (its ``ext`` parser, which
has filters such as ``[?(@.status.phase=="Running")]``), so slices, unions, recursive descent
and filters are a maintained library's, not a hand-written evaluator's.

What kubectl does and this keeps (k8s.io/client-go/util/jsonpath, cli-runtime's printers):

* the values one action found are printed separated by one space; strings bare, maps and
  lists as compact JSON (keys sorted), numbers as Go prints them, ``null`` for null;
* no newline is added: a template says where its newlines go (``{"\\n"}``);
* a missing key prints nothing, unless ``--allow-missing-template-keys=false``: then
  ``error executing jsonpath "...": Error executing template: KEY is not found``;
* an index past the end of a list is an error either way (``array index out of bounds``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonpath_ng import JSONPath

__all__ = [
    "JsonPathError",
    "Template",
    "go_text",
    "relaxed_expression",
]


class JsonPathError(ValueError):
    """A template that cannot be parsed, or (when keys must exist) cannot be executed."""


@dataclass(frozen=True)
class _Step:
    """One step of a path: its jsonpath-ng text, and what kubectl names in errors."""

    text: str
    field: str | None = None
    """The key this step reads (None for brackets and wildcards)."""
    index: int | None = None
    """The list index this step reads (``[3]``), checked against the list's length."""


@dataclass(frozen=True)
class _Path:
    """``{.a.b[*]}``: a kubectl path, compiled by jsonpath-ng."""

    source: str
    steps: tuple[_Step, ...]
    compiled: JSONPath

    def find(self, data: Any, *, allow_missing: bool) -> list[Any]:
        """Every value the path reaches from ``data``, in document order."""
        values = [m.value for m in self.compiled.find(data)]
        if values or not self.steps:
            return values
        self._why_empty(data, allow_missing=allow_missing)
        return values

    def _why_empty(self, data: Any, *, allow_missing: bool) -> None:
        """Raise kubectl's error for the step that found nothing (when kubectl would)."""
        current = [data]
        for number, step in enumerate(self.steps):
            if step.index is not None:
                for value in current:
                    if isinstance(value, list) and not -len(value) <= step.index < len(value):
                        raise JsonPathError(
                            f"array index out of bounds: index {step.index}, length {len(value)}"
                        )
            found = _compile("$" + "".join(s.text for s in self.steps[: number + 1])).find(data)
            if not found:
                if allow_missing or not current:
                    return
                raise JsonPathError(f"{step.field or step.text} is not found")
            current = [m.value for m in found]


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass
class _Range:
    path: _Path
    body: list[_Node] = field(default_factory=list)


_Node = _Text | _Path | _Range


def _compile(text: str) -> JSONPath:
    # Imported here: its parser tables take ~75 ms to load, which every other command spares.
    from jsonpath_ng.ext import parse

    try:
        return parse(text)
    except Exception as exc:  # its lexer and parser errors, and plain ones from ply
        raise JsonPathError(str(exc).strip() or type(exc).__name__) from None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TERMINATORS = frozenset(".[] \t\n}")


def _quoted_key(key: str) -> str:
    """A key as a jsonpath-ng string, whatever characters it has (``'app.kubernetes.io/x'``)."""
    if "'" not in key:
        return f"'{key}'"
    if '"' not in key:
        return f'"{key}"'
    raise JsonPathError(f"a key with both kinds of quote is not supported: {key}")


def _bracket_end(text: str, start: int) -> int:
    """The index just past the ``]`` closing the ``[`` at ``start`` (quotes and nesting
    respected)."""
    depth, quote, pos = 0, "", start
    while pos < len(text):
        char = text[pos]
        if quote:
            if char == "\\":
                pos += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    raise JsonPathError("unterminated array")


def _steps(expression: str) -> tuple[_Step, ...]:
    """kubectl's path syntax as jsonpath-ng steps: ``.a.b\\.c[0]..d`` ->
    ``.'a'``, ``.'b.c'``, ``[0]``, ``..'d'``."""
    steps: list[_Step] = []
    text = expression.strip()
    if text[:1] in ("$", "@"):
        text = text[1:]
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "[":
            end = _bracket_end(text, pos)
            inner = text[pos + 1 : end - 1].strip()
            index = int(inner) if re.fullmatch(r"-?\d+", inner) else None
            steps.append(_Step(f"[{inner}]", index=index))
            pos = end
        elif char == ".":
            descent = text.startswith("..", pos)
            pos += 2 if descent else 1
            key = []
            while pos < len(text) and text[pos] not in _TERMINATORS:
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                key.append(text[pos])
                pos += 1
            name = "".join(key)
            prefix = ".." if descent else "."
            if name == "*":
                steps.append(_Step(f"{prefix}*"))
            elif name:
                steps.append(_Step(prefix + _quoted_key(name), field=name))
            elif descent:
                raise JsonPathError("a recursive descent (..) needs a key after it")
            # a lone "." is the current object, as in kubectl's {.}
        elif char.isspace():
            pos += 1
        else:
            word = _IDENTIFIER.match(text, pos)
            shown = word.group(0) if word else char
            raise JsonPathError(f"unrecognized identifier {shown}")
    return tuple(steps)


def _path(expression: str) -> _Path:
    steps = _steps(expression)
    return _Path(expression, steps, _compile("$" + "".join(s.text for s in steps)))


def _literal(action: str) -> str | None:
    """The text of a quoted action (``"\\n"``, ``'x'``), None if it is not one."""
    if len(action) >= 2 and action[0] == action[-1] and action[0] in "\"'":
        if action[0] == "'":
            return action[1:-1]
        try:
            value = json.loads(action)
        except ValueError:
            raise JsonPathError(f"invalid string literal {action}") from None
        return str(value)
    return None


def _actions(template: str) -> Iterator[tuple[bool, str]]:
    """(is_action, text) pieces of a template: text outside braces, actions inside."""
    pos = 0
    while pos < len(template):
        start = template.find("{", pos)
        if start < 0:
            yield False, template[pos:]
            return
        if start > pos:
            yield False, template[pos:start]
        end, quote, depth = start + 1, "", 0
        while end < len(template):
            char = template[end]
            if quote:
                if char == "\\":
                    end += 1
                elif char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "\\":
                end += 1
            elif char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
            elif char == "}" and depth <= 0:
                break
            end += 1
        if end >= len(template):
            raise JsonPathError("unclosed action")
        yield True, template[start + 1 : end].strip()
        pos = end + 1


class Template:
    """A parsed kubectl JSONPath template; :meth:`execute` prints it against an object."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self.nodes = self._parse(source)
        except JsonPathError as exc:
            raise JsonPathError(f"error parsing jsonpath {source}, {exc}") from None

    @staticmethod
    def _parse(source: str) -> list[_Node]:
        root: list[_Node] = []
        stack: list[list[_Node]] = [root]
        for is_action, text in _actions(source):
            if not is_action:
                stack[-1].append(_Text(text))
                continue
            if (literal := _literal(text)) is not None:
                stack[-1].append(_Text(literal))
            elif text == "end":
                if len(stack) == 1:
                    raise JsonPathError("not in range, nothing to end")
                stack.pop()
            elif text.startswith("range ") or text == "range":
                node = _Range(_path(text.removeprefix("range")))
                stack[-1].append(node)
                stack.append(node.body)
            else:
                stack[-1].append(_path(text))
        if len(stack) != 1:
            raise JsonPathError("range without end")
        return root

    def values(self, data: Any, *, allow_missing: bool = True) -> list[list[Any]]:
        """What each action found, in order (a literal or text finds itself)."""
        found: list[list[Any]] = []
        try:
            self._walk(self.nodes, data, allow_missing, found)
        except JsonPathError as exc:
            raise JsonPathError(
                f'error executing jsonpath "{self.source}": Error executing template: {exc}. '
                f"Printing more information for debugging the template:\n"
                f"\ttemplate was:\n\t\t{self.source}"
            ) from None
        return found

    def _walk(
        self, nodes: Sequence[_Node], data: Any, allow_missing: bool, found: list[list[Any]]
    ) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                found.append([node.text])
            elif isinstance(node, _Path):
                found.append(node.find(data, allow_missing=allow_missing))
            else:
                for item in node.path.find(data, allow_missing=allow_missing):
                    self._walk(node.body, item, allow_missing, found)

    def execute(self, data: Any, *, allow_missing: bool = True, as_json: bool = False) -> str:
        """The template's text for ``data``, as ``kubectl -o jsonpath`` prints it (or, with
        ``as_json``, as ``-o jsonpath-as-json``: each action's values as an indented JSON
        array on its own lines)."""
        pieces = self.values(data, allow_missing=allow_missing)
        if as_json:
            return "".join(json.dumps(values, indent=4) + "\n" for values in pieces)
        return "".join(" ".join(_jsonpath_text(v) for v in values) for values in pieces)


def _go_json(value: Any) -> str:
    """Compact JSON as Go's encoding/json writes it: keys sorted, no spaces, ``<>&``
    escaped."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it: the shortest digits, in exponent form from 1e6 up
    and below 1e-4 (``1e+06``, ``1.5e-05``), else plain (``123456``, ``0.5``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # digits before the decimal point
    mark = "-" if sign else ""
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        power = point - 1
        return f"{mark}{mantissa}e{'+' if power >= 0 else '-'}{abs(power):02d}"
    if point <= 0:
        return f"{mark}0.{'0' * -point}{text}"
    if point >= len(text):
        return mark + text + "0" * (point - len(text))
    return f"{mark}{text[:point]}.{text[point:]}"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _jsonpath_text(value: Any) -> str:
    """One value as ``-o jsonpath`` prints it: maps and lists as JSON, the rest bare."""
    if isinstance(value, dict | list):
        return _go_json(value)
    return _scalar(value)


def go_text(value: Any) -> str:
    """One value as Go's ``%v`` prints it, which is what ``-o custom-columns`` shows:
    ``map[a:1 b:2]`` (keys sorted), ``[x y]``, ``<nil>``."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_text(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_text(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    return _scalar(value)


_RELAXED = re.compile(r"^\{?(\.?[^{}]*)\}?$")


def relaxed_expression(expression: str) -> str:
    """kubectl's RelaxedJSONPathExpression: ``metadata.name``, ``.metadata.name`` and
    ``{.metadata.name}`` all mean the template ``{.metadata.name}``."""
    match = _RELAXED.match(expression.strip())
    if match is None:
        raise JsonPathError(f"unexpected path string, expected a 'name1.name2' or "
                            f"'.name1.name2' or '{{name1.name2}}' or '{{.name1.name2}}': "
                            f"{expression}")  # fmt: skip
    inner = match.group(1)
    return "{" + (inner if inner.startswith(".") else "." + inner) + "}"
