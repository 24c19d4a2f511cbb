"""``-o FORMAT`` for every command that has it: the plain formats (``json``, ``yaml``,
``name``, ``wide``) and kubectl's template ones:

* ``jsonpath=TEMPLATE``, ``jsonpath-file=FILE``, ``jsonpath-as-json=TEMPLATE``
  (cli/jsonpath.py): applied to the object when one was named, else to a ``List`` of them,
  as kubectl does;
* ``custom-columns=HEADER:PATH,...`` and ``custom-columns-file=FILE``: a table whose
  columns are JSONPath expressions, ``<none>`` where one finds nothing. They become ordinary
  :class:`~p2pkube.cli.output.Column` s, so a custom table is printed (and followed by
  ``get -w``) by the same code as a kind's own table.

:class:`OutputFormat` is the click type of ``-o``: it checks a template when the command line
is parsed (a bad one is a usage error naming ``-o``) and hands the command the text it was
given; :func:`parse_output` turns that text into an :class:`Output`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from p2pkube.cli.common import CliError
from p2pkube.cli.jsonpath import JsonPathError, Template, go_text, relaxed_expression
from p2pkube.cli.output import Column, dump, object_name, render, to_list

__all__ = [
    "TEMPLATE_FORMATS",
    "Output",
    "OutputFormat",
    "allow_missing_keys_option",
    "parse_output",
    "print_objects",
]

TEMPLATE_FORMATS = (
    "jsonpath",
    "jsonpath-file",
    "jsonpath-as-json",
    "custom-columns",
    "custom-columns-file",
)
"""The ``-o FORMAT=ARGUMENT`` formats, as kubectl names them."""


@dataclass(frozen=True)
class Output:
    """What ``-o`` asked for: a plain format ("" for the default), a template, or columns."""

    format: str
    template: Template | None = None
    columns: tuple[Column, ...] | None = None

    @property
    def is_template(self) -> bool:
        """``jsonpath``, ``jsonpath-file`` or ``jsonpath-as-json``."""
        return self.template is not None

    @property
    def is_table(self) -> bool:
        """A table: the kind's (``""``, ``wide``) or ``custom-columns``."""
        return self.format in ("", "wide") or self.columns is not None

    def execute(self, data: Any, *, allow_missing: bool = True) -> str:
        """A jsonpath template's text for ``data`` (an object or a List)."""
        assert self.template is not None
        try:
            return self.template.execute(
                data, allow_missing=allow_missing, as_json=self.format == "jsonpath-as-json"
            )
        except JsonPathError as exc:
            raise CliError(str(exc)) from None


def _read(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except OSError as exc:
        raise JsonPathError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None


def _column(header: str, expression: str) -> Column:
    """A custom column: every value the expression finds, joined by commas (kubectl)."""
    template = Template(relaxed_expression(expression))

    def cell(obj: dict[str, Any]) -> str:
        values = [v for found in template.values(obj) for v in found]
        return ",".join(go_text(v) for v in values) if values else "<none>"

    return Column(header, cell)


def _custom_columns(spec: str) -> tuple[Column, ...]:
    """``NAME:.metadata.name,NODE:.spec.nodeName`` as columns (kubectl's syntax and errors)."""
    if not spec:
        raise JsonPathError("custom-columns format specified but no custom columns given")
    columns = []
    for part in spec.split(","):
        pieces = part.split(":")
        if len(pieces) != 2 or not pieces[0]:
            raise JsonPathError(
                f"unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>"
            )
        columns.append(_column(pieces[0], pieces[1]))
    return tuple(columns)


def _custom_columns_file(text: str) -> tuple[Column, ...]:
    """kubectl's custom-columns file: a line of headers, then a line of paths."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 2:
        raise JsonPathError(
            "a custom-columns file has two lines: the headers, then their JSONPath expressions"
        )
    headers, paths = lines[0].split(), lines[1].split()
    if len(headers) != len(paths):
        raise JsonPathError(f"expected {len(headers)} headers, received {len(paths)}")
    return tuple(_column(h, p) for h, p in zip(headers, paths, strict=True))


def parse_output(text: str | None) -> Output:
    """The :class:`Output` for an ``-o`` value (None: the default); :class:`JsonPathError`
    for a bad template or columns, :class:`CliError` wrapping it when called by a command."""
    if not text:
        return Output("")
    name, eq, argument = text.partition("=")
    if not eq or name not in TEMPLATE_FORMATS:
        return Output(text)
    if name == "jsonpath-file":
        return Output(name, template=Template(_read(argument, "jsonpath")))
    if name in ("jsonpath", "jsonpath-as-json"):
        if not argument:
            raise JsonPathError(f"template format specified but no template given ({name}=...)")
        return Output(name, template=Template(argument))
    if name == "custom-columns-file":
        return Output(name, columns=_custom_columns_file(_read(argument, "custom-columns")))
    return Output(name, columns=_custom_columns(argument))


class OutputFormat(click.ParamType):
    """``-o``: one of the command's plain formats, or a kubectl template format."""

    name = "format"

    def __init__(self, plain: Sequence[str]) -> None:
        self.plain = tuple(plain)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join((*self.plain, "jsonpath=...", "custom-columns=...")) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if text in self.plain:
            return text
        name, eq, _ = text.partition("=")
        if eq and name in TEMPLATE_FORMATS:
            try:
                parse_output(text)
            except JsonPathError as exc:
                self.fail(str(exc), param, ctx)
            return text
        allowed = ", ".join((*self.plain, *TEMPLATE_FORMATS))
        self.fail(
            f"unable to match a printer suitable for the output format {text!r}, "
            f"allowed formats are: {allowed}",
            param,
            ctx,
        )


def allow_missing_keys_option(func: Any) -> Any:
    """kubectl's ``--allow-missing-template-keys`` (default true; ``=false`` with
    :class:`~p2pkube.cli.common.KubectlCommand`)."""
    return click.option(
        "--allow-missing-template-keys/--no-allow-missing-template-keys",
        default=True,
        help="With -o jsonpath: print nothing for a missing key (the default; =false: fail "
        "naming the key).",
    )(func)


def print_objects(
    objs: Sequence[dict[str, Any]], output: str | None, *, single: bool, allow_missing: bool = True
) -> bool:
    """Print ``objs`` for ``-o json|yaml|name`` or a template format, as kubectl does after
    ``create`` and ``apply``; False (nothing printed) for the default output, which each
    command words itself (``configmap/x created``)."""
    spec = parse_output_or_fail(output)
    if spec.format == "":
        return False
    data: Any = objs[0] if single and len(objs) == 1 else to_list(objs)
    if spec.is_template:
        click.echo(spec.execute(data, allow_missing=allow_missing), nl=False)
    elif spec.columns is not None:
        click.echo(render(objs, spec.columns, ""))
    elif spec.format in ("json", "yaml"):
        click.echo(dump(data, spec.format))
    elif spec.format == "name":
        for obj in objs:
            click.echo(object_name(obj))
    else:
        return False
    return True


def parse_output_or_fail(output: str | None) -> Output:
    """:func:`parse_output` for a command: a bad template is a CliError."""
    try:
        return parse_output(output)
    except JsonPathError as exc:
        raise CliError(str(exc)) from None
