"""``p2pkube wait``: block until objects meet a condition, as ``kubectl wait`` does.

``--for=condition=NAME[=VALUE]`` (a ``status.conditions`` entry; VALUE defaults to True, both
compared without regard to case), ``--for=delete`` and ``--for=jsonpath=EXPR[=VALUE]`` (the
CLI's own JSONPath, ``cli/jsonpath.py``: one value, printed as Go's ``%v`` would, equal to
VALUE; without VALUE the path must find something). Objects are named (``TYPE/NAME ...`` or
``TYPE NAME ...``) or chosen with ``-l`` or ``--all``; the set is fixed when the command starts,
as in kubectl.

It follows the agent's watch stream (``GET /v1/watch/{kind}``, as ``get -w`` does) and never
polls: the list that fixes the set is taken once the watch is open, so a change between the
two is in the stream. Each object that meets the condition is printed ``TYPE/NAME condition
met`` (stdout); on a terminal a bar on stderr counts them. When ``--timeout`` (30s, kubectl's
default; 0 checks once) passes first, each object still waited for gets kubectl's ``error:
timed out waiting for the condition on PLURAL/NAME`` and the exit code is 1.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from p2pkube.api.client import ApiClient, ApiError
from p2pkube.cli.common import (
    CliError,
    Duration,
    State,
    all_namespaces_option,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.completion import complete_objects
from p2pkube.cli.get import lookup_resource, namespace_scope
from p2pkube.cli.jsonpath import JsonPathError, Template, go_text, relaxed_expression
from p2pkube.cli.output import Resource, field
from p2pkube.cli.progress import Bar, bar

DEFAULT_TIMEOUT = "30s"
"""kubectl wait's default --timeout."""

Key = tuple[str, str]
"""(namespace, name) of a waited-for object."""


@dataclass(frozen=True)
class Condition:
    """What ``--for`` asks: ``met(obj)`` for an object that exists; ``delete`` is met only by
    the object's absence."""

    text: str
    met: Callable[[dict[str, Any]], bool]
    delete: bool = False


def parse_condition(text: str) -> Condition:
    """The condition ``--for`` names; ValueError saying what is accepted otherwise."""
    if text == "delete":
        return Condition(text, lambda obj: False, delete=True)
    kind, eq, rest = text.partition("=")
    if eq and kind == "condition" and rest:
        name, has_value, value = rest.partition("=")
        if not name or (has_value and not value):
            raise ValueError(f"condition {text!r} names no condition type or no value")
        wanted = value if has_value else "True"
        return Condition(text, lambda obj: _has_condition(obj, name, wanted))
    if eq and kind == "jsonpath" and rest:
        return _jsonpath_condition(text, rest)
    raise ValueError(
        f"unrecognized condition: {text!r} (use condition=NAME[=VALUE], delete or "
        "jsonpath='{.PATH}'[=VALUE])"
    )


def _has_condition(obj: dict[str, Any], name: str, wanted: str) -> bool:
    for condition in field(obj, "status.conditions") or []:
        if isinstance(condition, dict) and str(condition.get("type", "")).lower() == name.lower():
            return str(condition.get("status", "")).lower() == wanted.lower()
    return False


def _jsonpath_condition(text: str, rest: str) -> Condition:
    """``jsonpath={.status.phase}=Running`` (braces optional, as kubectl relaxes them)."""
    if rest.startswith("{"):
        depth, end = 0, -1
        for index, char in enumerate(rest):
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0:
                end = index
                break
        if end < 0:
            raise ValueError(f"jsonpath {rest!r} has an unclosed brace")
        path, value_part = rest[: end + 1], rest[end + 1 :]
    else:
        path, eq, value = rest.partition("=")
        value_part = eq + value
    if value_part and not value_part.startswith("="):
        raise ValueError(f"jsonpath {rest!r}: expected '=' and a value after the path")
    wanted = value_part[1:] if value_part else None
    if wanted == "":
        raise ValueError("jsonpath wait has to have a value after equal sign")
    try:
        template = Template(relaxed_expression(path))
    except JsonPathError as exc:
        raise ValueError(str(exc)) from None

    def met(obj: dict[str, Any]) -> bool:
        try:
            found = [v for values in template.values(obj) for v in values]
        except JsonPathError:
            return False
        if wanted is None:
            return any(v is not None for v in found)
        if len(found) != 1 or isinstance(found[0], dict | list):
            return False  # kubectl refuses several values or a map/list as the compared one
        return go_text(found[0]) == wanted

    return Condition(text, met)


def _key(obj: dict[str, Any]) -> Key:
    return (str(field(obj, "metadata.namespace", "")), str(field(obj, "metadata.name", "")))


def _targets(args: tuple[str, ...]) -> tuple[Resource, list[str]]:
    """The kind and names of ``TYPE/NAME ...`` or ``TYPE [NAME ...]``."""
    if not args:
        raise click.UsageError(
            "you must specify the type of resource to wait on, e.g. pod/web or pods -l app=web"
        )
    if "/" in args[0]:
        resource: Resource | None = None
        names = []
        for arg in args:
            kind, slash, name = arg.partition("/")
            if not slash or not name:
                raise click.UsageError(f"{arg!r}: use TYPE/NAME for every object, or TYPE NAME...")
            this = lookup_resource(kind)
            if resource is not None and this.kind != resource.kind:
                raise click.UsageError("wait follows one kind at a time")
            resource = this
            names.append(name)
        assert resource is not None
        return resource, names
    return lookup_resource(args[0]), list(args[1:])


@click.command()
@click.argument(
    "args", nargs=-1, metavar="TYPE/NAME... | TYPE [NAME...]", shell_complete=complete_objects
)
@click.option(
    "--for",
    "for_",
    required=True,
    metavar="CONDITION",
    help="condition=NAME[=VALUE] (e.g. condition=Ready), delete, or "
    "jsonpath='{.PATH}'[=VALUE] (e.g. jsonpath='{.status.phase}'=Running).",
)
@click.option(
    "--timeout",
    type=Duration(),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Give up (exit 1) after this long, e.g. 30s, 5m; 0 checks once.",
)
@selector_option
@click.option("--all", "all_", is_flag=True, help="Every object of the kind in the namespace.")
@namespace_option
@all_namespaces_option
@data_dir_option
@click.pass_obj
def wait(
    state: State,
    args: tuple[str, ...],
    for_: str,
    timeout: float,
    selector: str | None,
    all_: bool,
    namespace: str | None,
    all_namespaces: bool,
) -> None:
    """Wait until objects meet a condition (kubectl wait).

    \b
    p2pkube wait --for=condition=Ready pod/web-1 pod/web-2
    p2pkube wait --for=condition=Available deployment web --timeout=60s
    p2pkube wait --for=jsonpath='{.status.phase}'=Running pods -l app=web
    p2pkube wait --for=delete pod/web-1
    p2pkube wait --for=condition=Ready nodes --all

    Prints 'TYPE/NAME condition met' for each; exit 1 with kubectl's 'timed out waiting
    for the condition on ...' when --timeout passes first. On a terminal a bar on stderr
    counts the objects that meet it.
    """
    resource, names = _targets(args)
    try:
        condition = parse_condition(for_)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--for'") from None
    if not resource.watchable or resource.kind == "Blob":
        raise click.UsageError(f"{resource.plural} cannot be waited on (they are not watched)")
    if names and all_namespaces:
        raise click.UsageError("a resource cannot be retrieved by name across all namespaces")
    if names and (selector is not None or all_):
        raise click.UsageError("names cannot be given with -l/--selector or --all")
    if not names and selector is None and not all_:
        raise click.UsageError(
            "resource(s) were provided, but no name was specified (give names, -l or --all)"
        )
    ns = namespace_scope(resource, namespace, all_namespaces)
    waiter = _Waiter(state.client(), resource, ns, names, selector, condition)
    if not waiter.wait(timeout):
        for key in waiter.unmet():
            click.echo(
                f"error: timed out waiting for the condition on {resource.plural}/{key[1]}",
                err=True,
            )
        sys.exit(1)


class _AllMet(Exception):
    """Raised out of a watch that has just opened when its list found nothing left to wait
    for (the stream itself may never send another event)."""


class _Waiter:
    """One ``wait``: the objects waited for, their last seen state, which meet the condition."""

    def __init__(
        self,
        client: ApiClient,
        resource: Resource,
        ns: str | None,
        names: list[str],
        selector: str | None,
        condition: Condition,
    ) -> None:
        self.client = client
        self.resource = resource
        self.ns = ns
        self.names = names
        self.selector = selector
        self.condition = condition
        self.objects: dict[Key, dict[str, Any] | None] | None = None
        """Waited-for object -> its last state (None: gone); None until listed."""
        self.met: set[Key] = set()

    def wait(self, timeout: float) -> bool:
        """Whether every object met the condition within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._list(None)
        if not self.unmet() or timeout <= 0:
            return not self.unmet()
        label = f"waiting for {self.condition.text} on {self.resource.plural}"
        with bar(label, len(self.objects or {})) as drawn:
            self._draw(drawn)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                events = self.client.watch(
                    self.resource.kind,
                    self.ns,
                    self.selector,
                    timeout_seconds=max(1, math.ceil(left)),
                    on_open=lambda: self._reopened(drawn),
                )
                try:
                    for event in events:
                        if self._seen(event, drawn):
                            return True
                        if time.monotonic() >= deadline:
                            return False
                except _AllMet:
                    return True
                finally:
                    events.close()

    def unmet(self) -> list[Key]:
        return sorted(k for k in self.objects or {} if k not in self.met)

    def _list(self, drawn: Bar | None) -> None:
        """Fix the set of objects (the first time) or refresh what we know of it."""
        current = {_key(obj): obj for obj in self._current()}
        if self.objects is None:
            if self.names:
                wanted = {(self._namespace(), name) for name in self.names}
                missing = sorted(name for ns, name in wanted if (ns, name) not in current)
                if missing and not self.condition.delete:
                    raise ApiError(
                        404, "NotFound", f'{self.resource.plural} "{missing[0]}" not found'
                    )
                self.objects = {key: current.get(key) for key in sorted(wanted)}
            else:
                if not current and not self.condition.delete:
                    raise CliError("no matching resources found")
                self.objects = dict(sorted(current.items()))
        else:
            self.objects = {key: current.get(key) for key in self.objects}
        for key, obj in self.objects.items():
            self._judge(key, obj, drawn)
        self._draw(drawn)

    def _reopened(self, drawn: Bar | None) -> None:
        """A watch is open: list again, so that what changed before it is not missed (an
        object deleted meanwhile sends no event any more); _AllMet when nothing is left."""
        self._list(drawn)
        if not self.unmet():
            raise _AllMet

    def _namespace(self) -> str:
        return self.ns or ""

    def _current(self) -> list[dict[str, Any]]:
        client, kind = self.client, self.resource.kind
        if kind == "Node":
            return client.list_nodes(self.selector)
        return client.list_objects(kind, self.ns, self.selector)

    def _seen(self, event: dict[str, Any], drawn: Bar | None) -> bool:
        """Take one watch event in; whether everything is met now."""
        event_type = str(event.get("type", ""))
        obj = event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:  # fell behind: the next watch lists again
                return False
            raise CliError(f"the watch ended: {obj.get('message', obj)}")
        assert self.objects is not None  # listed when the watch opened
        key = _key(obj)
        if key not in self.objects:
            return False
        self.objects[key] = None if event_type == "DELETED" else obj
        self._judge(key, self.objects[key], drawn)
        self._draw(drawn)
        return not self.unmet()

    def _judge(self, key: Key, obj: dict[str, Any] | None, drawn: Bar | None) -> None:
        if key in self.met:
            return  # once met, kubectl reports it and moves on
        if obj is None if self.condition.delete else obj is not None and self.condition.met(obj):
            self.met.add(key)
            line = f"{self.resource.singular}/{key[1]} condition met"
            if drawn is not None:
                drawn.echo(line)
            else:
                click.echo(line)

    def _draw(self, drawn: Bar | None) -> None:
        if drawn is not None and self.objects is not None:
            total = len(self.objects)
            drawn.show(len(self.met), total, item=f"{len(self.met)}/{total} met")
