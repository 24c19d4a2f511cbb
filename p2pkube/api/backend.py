"""The contract between the local API server and the agent.

The server knows HTTP, auth and Kubernetes-style errors; the agent knows the CRDT store and the
failure detector. This Protocol is the only thing they share, so the server can be tested with a
small in-memory double and the agent can change its internals without touching the API.
"""

from __future__ import annotations

from typing import Any, Protocol


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

    async def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Validate and store ``obj``; return the stored object once it is fsynced.

        Raises ValueError with a user-facing message when the object is invalid (the API turns
        it into a 422 ``Invalid``).
        """
        ...

    async def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        """Delete one object; False if there was nothing to delete."""
        ...

    def status(self) -> dict[str, Any]:
        """This agent's own view: node name/id, neighbours, counters (free-form JSON)."""
        ...
