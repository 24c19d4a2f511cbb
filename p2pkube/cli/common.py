"""What every client command of the CLI shares: errors, the data dir, common options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from p2pkube.api import dns_label_error
from p2pkube.api.client import ApiClient

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


@dataclass
class State:
    """Options shared by every command."""

    data_dir: Path

    def client(self) -> ApiClient:
        """A client for the agent that owns this data dir."""
        return ApiClient.from_data_dir(self.data_dir)


def _set_data_dir(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(State).data_dir = value.expanduser()


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
