"""The contract between the local API server and the agent.

The server knows HTTP, auth and Kubernetes-style errors; the agent knows the CRDT store and the
failure detector. This Protocol is the only thing they share, so the server can be tested with
the in-memory test backend (tests/memorybackend.py) and the agent can change its internals
without touching the API. Watches come from the node's :class:`~p2pkube.model.watch.WatchHub`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from p2pkube.model.watch import DEFAULT_WATCH_SECONDS, WATCH_QUEUE_SIZE, Watch

if TYPE_CHECKING:
    from p2pkube.runtime.interface import LogLine
    from p2pkube.runtime.podlogs import LogReply, LogRequest
    from p2pkube.runtime.usage import UsageReport, UsageUnavailable

__all__ = ["AgentBackend"]


class AgentBackend(Protocol):
    """What the local API needs from a running agent.

    Objects are plain kubectl-shaped dicts (``apiVersion``, ``kind``, ``metadata``, ...).
    Cluster-scoped kinds use namespace ``""``. Label selectors are applied by the API layer,
    so list methods return everything in scope.
    """

    node_name: str

    def list_nodes(self) -> list[dict[str, Any]]:
        """Node objects as this agent sees them; ``Ready`` comes from its failure detector."""
        ...

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (``None``: all namespaces)."""
        ...

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None if it does not exist (or was deleted)."""
        ...

    async def put_object(
        self,
        obj: dict[str, Any],
        warn: Callable[[str], None] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Validate and store ``obj``; return the stored object once it is fsynced. ``warn``
        hears each warning (a Kubernetes field that p2pkube ignores). ``dry_run`` checks
        everything and writes nothing.

        Raises ValueError with a user-facing message when the object is invalid (the API turns
        it into a 422 ``Invalid``).
        """
        ...

    async def put_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Replace an object's status (the status subresource); returns the object with it.
        LookupError when the object does not exist."""
        ...

    async def delete_object(
        self, kind: str, namespace: str, name: str, *, force: bool = False
    ) -> bool:
        """Delete one object; False if there was nothing to delete. A Pod running on a Ready
        node is only marked (its node stops and removes it) unless ``force``."""
        ...

    async def read_logs(self, request: LogRequest) -> LogReply:
        """A container's log lines; LookupError (with the reason, and an HTTP ``status`` when
        it has one) when there are none to read."""
        ...

    def follow_logs(self, request: LogRequest, seconds: float) -> AsyncGenerator[LogLine, None]:
        """The request's lines, then new ones until the container ends or ``seconds`` pass."""
        ...

    async def read_usage(self, names: list[str]) -> dict[str, UsageReport | UsageUnavailable]:
        """The measured usage of the nodes called ``names`` (this one's, the others' over the
        mesh), each with its reason when it cannot be had (``kubectl top``)."""
        ...

    def watch(
        self,
        kind: str | tuple[str, ...],
        namespace: str | None,
        *,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = DEFAULT_WATCH_SECONDS,
        max_queue: int = WATCH_QUEUE_SIZE,
        since: int | None = None,
        gone: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> Watch:
        """A started :class:`Watch` on ``kind`` in ``namespace`` (None: all, "": cluster-scoped).

        The label selector is passed as ``match`` (unlike lists) because it decides event
        types: an object that stops matching must be reported DELETED. ``since`` resumes
        from a revision (ResourceVersionTooOld when it is too old); ``gone`` shows a deleted
        object whose last state is unknown (see :meth:`WatchHub.subscribe`).
        """
        ...

    def revision(self, key: str | None = None) -> int:
        """The node's current revision, or the one ``key`` (``Kind/namespace/name``) last
        changed at: the resourceVersions of the Kubernetes API (model/watch.WatchHub)."""
        ...

    def status(self) -> dict[str, Any]:
        """This agent's own view: node name/id, neighbours, counters (free-form JSON)."""
        ...

    async def dashboard(self) -> dict[str, Any]:
        """The dashboard's poll answer: the mesh's nodes and links with their round trips,
        the workloads' leases and the Services' request totals (``Node.dashboard``)."""
        ...

    def block_nodes(self, names: list[str]) -> list[str]:
        """Fault injection: refuse links to these nodes (a partition when done on both
        sides); returns the names now blocked; LookupError for an unknown name."""
        ...

    def stall_loop(self, seconds: float) -> float:
        """Fault injection: block the agent's event loop for ``seconds`` (the caller bounds
        them); returns the seconds it was blocked."""
        ...
