"""The metrics listener: ``GET /metrics`` in the Prometheus text format, on its own port.

It is not the local API: Prometheus scrapes without a bearer token, so the series are served
on a separate small aiohttp listener (``p2pkube join --metrics-address HOST:PORT``) that
answers nothing else (``/`` says where the metrics are, anything else is 404). The series
carry no secrets (counts, sizes, durations, node names, the cluster id: never the token, a
Secret or an object's content), but they tell a lot about the cluster: bind it to loopback or
a network only trusted scrapers reach.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from p2pkube.api.frontdoor import listen
from p2pkube.metrics.exporter import AgentMetrics

log = logging.getLogger("p2pkube.metrics")

HINT = "p2pkube agent metrics: GET /metrics (Prometheus text format; docs/metrics.md)\n"


class MetricsServer:
    """Serves one agent's registry on ``host:port`` (port 0: any free one, see :attr:`url`)."""

    def __init__(self, metrics: AgentMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.url: str | None = None
        """``http://HOST:PORT/metrics`` once listening."""
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self.metrics.registry))
        app.router.add_get("/", self._hint)
        return app

    async def _hint(self, _request: web.Request) -> web.Response:
        return web.Response(text=HINT)

    async def start(self) -> None:
        """Listen (OSError, e.g. the address is taken, goes to the caller)."""
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        self.port = await listen(runner, self.host, self.port)
        self._runner = runner
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}/metrics"
        log.info("metrics at %s (no token: keep it on loopback or a trusted network)", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
