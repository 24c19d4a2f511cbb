"""``p2pkube dashboard``: the URL of the live cluster dashboard the local agent serves.

The agent serves the page itself (``/dashboard/`` on its loopback API; docs/dashboard.md), so
this command only builds the URL, ``http://127.0.0.1:PORT/dashboard/#token=TOKEN``, checks
that the page is there, prints the URL and, on a terminal, opens it in a browser (Python's
``webbrowser``, which does nothing where no browser is known). It does not keep running: unlike
``kubectl proxy`` it has nothing to serve, and the URL stays good as long as the agent runs
(a restarted agent has a new port and token: run the command again). ``--url`` prints the URL
and does nothing else, as ``minikube dashboard --url`` does, for scripts and remote shells
(forward the port with ``ssh -L``; the token in the fragment never reaches a server or a log).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
import webbrowser

import click

from p2pkube.api.client import agent_info
from p2pkube.cli.common import CliError, State, data_dir_option

__all__ = ["dashboard", "dashboard_url"]

CHECK_TIMEOUT = 5.0
"""Seconds the command waits for the agent to answer for the page."""


def dashboard_url(state: State) -> str:
    """The dashboard's URL on the agent of ``state.data_dir``, with the token in the fragment;
    CliError when the agent does not answer or serves no page (the bundle is not built)."""
    info, token = agent_info(state.data_dir)
    page = f"{str(info['url']).rstrip('/')}/dashboard/"
    # No proxy: the agent is on loopback (as ApiClient does it).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(page, timeout=CHECK_TIMEOUT) as answer:
            answer.read(1)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        raise CliError(f"the agent serves no dashboard ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(
            f"the agent of {state.data_dir} does not answer at {info['url']} ({exc}); "
            "is it running? (p2pkube join)"
        ) from None
    return f"{page}#token={token}"


@click.command()
@click.option("--url", "url_only", is_flag=True, help="Print the URL and exit; open nothing.")
@data_dir_option
@click.pass_obj
def dashboard(state: State, url_only: bool) -> None:
    """Print the URL of the live cluster dashboard (open it in a browser on a terminal).

    The local agent serves the dashboard on 127.0.0.1; the URL carries the agent's API token
    in its fragment, so keep it to yourself as you would the data dir."""
    url = dashboard_url(state)
    click.echo(url)
    if url_only or not sys.stdout.isatty():
        return
    if webbrowser.open(url):
        click.echo("opened in your browser", err=True)
    else:
        click.echo("no browser found here: open the URL above", err=True)
