"""What every client command of the CLI shares: errors, the data dir, common options."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from p2pkube.api.client import ApiClient
from p2pkube.model.names import dns_label_error

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_NAMESPACE = "default"


class CliError(click.ClickException):
    """A user-facing failure: ``error: <message>`` on stderr, exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class ServerError(CliError):
    """The agent refused the request; shown verbatim, the way kubectl shows it."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), err=True, file=file)


def show_warning(text: str) -> None:
    """An agent's warning, on stderr as kubectl prints a server's."""
    click.echo(f"Warning: {text}", err=True)


@dataclass
class State:
    """Options shared by every command."""

    data_dir: Path

    def client(self) -> ApiClient:
        """A client for the agent that owns this data dir."""
        return ApiClient.from_data_dir(self.data_dir, on_warning=show_warning)


def _set_data_dir(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    state = ctx.find_object(State)
    if state is None:  # shell completion: the group's callback, which makes the State, never ran
        ctx.obj = State(value.expanduser())
    else:
        state.data_dir = value.expanduser()


def data_dir_option(func: F) -> F:
    """Accept ``--data-dir`` after the subcommand too (``p2pkube get nodes --data-dir D``)."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_set_data_dir,
        help="Agent data dir (overrides the global --data-dir).",
    )(func)


def _check_namespace(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is not None and (problem := dns_label_error(value)):
        raise click.BadParameter(f"{value!r} {problem}")
    return value


def namespace_option(func: F) -> F:
    """``-n/--namespace``; None when not given so ``get`` can tell "default" from "all"."""
    return click.option(
        "-n",
        "--namespace",
        default=None,
        callback=_check_namespace,
        help=f"Namespace (default: {DEFAULT_NAMESPACE}).",
    )(func)


def all_namespaces_option(func: F) -> F:
    """``-A/--all-namespaces``."""
    return click.option("-A", "--all-namespaces", is_flag=True, help="Across all namespaces.")(func)


def selector_option(func: F) -> F:
    """``-l/--selector``."""
    return click.option(
        "-l", "--selector", default=None, help="Label selector, e.g. app=x,tier!=db."
    )(func)


_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class KubectlCommand(click.Command):
    """A command whose ``--flag/--no-flag`` options also take kubectl's ``--flag=true|false``.

    kubectl writes ``rollout status --watch=false`` and ``describe --show-events=false``;
    click's boolean flags take no value, and an option with an optional value would swallow
    the next argument (``-w deployment``). This rewrites ``--flag=VALUE`` before parsing.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flags = {
            opt: param.secondary_opts[0]
            for param in self.params
            if isinstance(param, click.Option) and param.is_flag and param.secondary_opts
            for opt in param.opts
            if opt.startswith("--")
        }
        rewritten: list[str] = []
        for index, arg in enumerate(args):
            if arg == "--":
                rewritten += args[index:]
                break
            name, eq, value = arg.partition("=")
            if eq and name in flags:
                if value.lower() in _TRUE:
                    arg = name
                elif value.lower() in _FALSE:
                    arg = flags[name]
                else:
                    raise click.BadParameter(
                        f"{value!r} is not true or false", ctx=ctx, param_hint=f"'{name}'"
                    )
            rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go/kubectl duration (``30s``, ``2m30s``, ``1h``, ``500ms``) or a bare
    number of seconds; ValueError if it is neither."""
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        pos, seconds = 0, 0.0
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        while pos < len(stripped):
            match = _DURATION_PART.match(stripped, pos)
            if match is None:
                raise ValueError(
                    f"{text!r} is not a duration (examples: 30s, 2m30s, 1h, 500ms)"
                ) from None
            seconds += float(match.group(1)) * scale[match.group(2)]
            pos = match.end()
        if not stripped:
            raise ValueError("a duration must not be empty") from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a duration of zero or more seconds")
    return seconds


class Duration(click.ParamType):
    """A click parameter holding seconds, written ``30s``, ``5m``, ``1h30m`` or ``90``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
