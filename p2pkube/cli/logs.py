"""``p2pkube logs``: a pod's log lines, or those of every pod a selector matches, as kubectl.

Each container's log is served by the node that ran the pod, through the mesh (the agent's
``/v1/pods/NS/NAME/log``). With ``-l`` the pods are taken in name order, each container's
lines printed in turn (``--tail`` defaults to 10 there, as in kubectl); with ``-f`` too,
every stream is followed at once, one thread each, up to ``--max-log-requests``, and lines
are printed whole as they come. ``--prefix`` starts each line with ``[pod/NAME/CONTAINER]``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from p2pkube.api.client import ApiClientError
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    State,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.completion import complete_pods
from p2pkube.cli.output import field, name_of

__all__ = ["logs"]

SELECTOR_TAIL = 10
"""kubectl's --tail when pods are chosen by a selector (all lines for a named pod)."""


@dataclass(frozen=True)
class _Stream:
    """One container's log to print."""

    pod: str
    container: str | None

    @property
    def prefix(self) -> str:
        return f"[pod/{self.pod}/{self.container or ''}] "


def _containers(pod: dict[str, Any], container: str | None, every: bool) -> list[str | None]:
    """The containers of ``pod`` to read: -c's, all of them, or its only one (None: the
    agent's default, for a pod with several)."""
    names = [str(c.get("name")) for c in field(pod, "spec.containers") or [] if isinstance(c, dict)]
    if every:
        return list(names)
    if container is not None:
        return [container]
    return [names[0]] if len(names) == 1 else [None]


@click.command()
@click.argument("pod", metavar="[POD]", required=False, shell_complete=complete_pods)
@click.option("-c", "--container", default=None, help="Container (needed when there are several).")
@click.option("--all-containers", is_flag=True, help="Every container of each pod.")
@selector_option
@click.option("--prefix", is_flag=True, help="Start each line with [pod/NAME/CONTAINER].")
@click.option(
    "--max-log-requests",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="With -l and -f: the most logs followed at once.",
)
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the container ends.")
@click.option("-p", "--previous", is_flag=True, help="The previous instance (after a restart).")
@click.option(
    "--tail", type=int, default=None, help="Last N lines (default: all; 10 with -l; -1: all)."
)
@click.option("--since-time", default=None, help="Lines at or after an RFC 3339 time.")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
@namespace_option
@data_dir_option
@click.pass_obj
def logs(
    state: State,
    pod: str | None,
    container: str | None,
    all_containers: bool,
    selector: str | None,
    prefix: bool,
    max_log_requests: int,
    follow: bool,
    previous: bool,
    tail: int | None,
    since_time: str | None,
    timestamps: bool,
    namespace: str | None,
) -> None:
    """Print the logs of a pod, or of every pod -l SELECTOR matches (served by the node
    that ran each, through the mesh)."""
    if (pod is None) == (selector is None):
        raise click.UsageError("give a POD or -l SELECTOR (one of them)")
    if container is not None and all_containers:
        raise click.UsageError("--container and --all-containers cannot be used together")
    ns = namespace or DEFAULT_NAMESPACE
    client = state.client()
    if pod is not None:
        name = pod.removeprefix("pod/").removeprefix("pods/")
        if all_containers or prefix:
            obj = client.get_object("Pod", ns, name)
            streams = [_Stream(name, c) for c in _containers(obj, container, all_containers)]
        else:
            streams = [_Stream(name, container)]
    else:
        pods = client.list_objects("Pod", ns, selector)
        pods.sort(key=name_of)
        if not pods:
            click.echo(f"No resources found in {ns} namespace.", err=True)
            return
        streams = [
            _Stream(name_of(p), c) for p in pods for c in _containers(p, container, all_containers)
        ]
        if tail is None:
            tail = SELECTOR_TAIL
    if follow and len(streams) > max_log_requests:
        raise CliError(
            f"you are attempting to follow {len(streams)} log streams, but maximum allowed "
            f"concurrency is {max_log_requests}, use --max-log-requests to increase the limit"
        )
    last = None if tail is None or tail < 0 else tail

    def lines(stream: _Stream) -> Iterator[str]:
        shown = stream.prefix if prefix else ""
        for line in state.client().pod_logs(
            ns,
            stream.pod,
            container=stream.container,
            previous=previous,
            tail=last,
            since_time=since_time,
            timestamps=timestamps,
            follow=follow,
            on_omitted=_warn_omitted,
        ):
            yield shown + line

    if len(streams) == 1:  # one log: errors are the command's, as before
        for line in lines(streams[0]):
            click.echo(line)
    elif follow:
        _follow_all(streams, lines)
    else:
        failed = False
        for stream in streams:  # in turn; a pod without logs does not hide the others'
            try:
                for line in lines(stream):
                    click.echo(line)
            except ApiClientError as exc:
                click.echo(_stream_error(stream, exc), err=True)
                failed = True
        if failed:
            sys.exit(1)


def _warn_omitted(count: int) -> None:
    click.echo(
        f"warning: {count} older lines left out (a reply is limited to 4 MiB); "
        "use --tail or --since-time",
        err=True,
    )


def _stream_error(stream: _Stream, exc: Exception) -> str:
    what = f"pod/{stream.pod}" + (f" container {stream.container}" if stream.container else "")
    if str(exc).startswith("Error from server"):
        return f"{exc} ({what})"
    return f"error: {what}: {exc}"


def _follow_all(streams: list[_Stream], lines: Callable[[_Stream], Iterator[str]]) -> None:
    """Follow every stream at once, one thread each, printing whole lines as they come, until
    all of them ended; exit 1 if any failed."""
    lock = threading.Lock()
    failures: list[str] = []

    def run(stream: _Stream) -> None:
        try:
            for line in lines(stream):
                with lock:
                    click.echo(line)
        except ApiClientError as exc:
            with lock:
                failures.append(_stream_error(stream, exc))
                click.echo(failures[-1], err=True)

    threads = [
        threading.Thread(target=run, args=(s,), name=f"logs-{s.pod}", daemon=True) for s in streams
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)  # short waits: Ctrl-C reaches the main thread
    if failures:
        sys.exit(1)
