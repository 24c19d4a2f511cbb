"""What the rest of the agent sees of a member's liveness: `NodeLiveness`, kept by the
membership host (`swim_host.SwimMembership`) and read by the node (the Node objects' Ready
condition, the scheduler's view, routing). Its own module so that readers need not load the
SWIM host, and the host's record of a member stays a plain dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pkube.membership.settings import SwimSettings
from p2pkube.membership.swim_gossip import suspicion_bounds

__all__ = ["NodeLiveness", "detection_bound"]


def detection_bound(swim: SwimSettings, members: int) -> float:
    """Seconds after which a member that stopped is DEAD everywhere, without load: a probe
    period (the probe that misses it) plus the suspicion timeout's ceiling at ``members``
    (a lone accuser's wait; confirmations only shorten it). The simulator's p99 stays under
    it (see `SwimSettings`). Also how long a node this agent never heard from since it
    started counts as Unknown rather than NotReady: a node that died just before this agent
    joined is declared no sooner than one that died just after."""
    _, ceiling = suspicion_bounds(swim, members)
    return swim.probe_interval + ceiling


@dataclass
class NodeLiveness:
    """What this agent knows of one other node's liveness."""

    node: str
    """The node's id (its public key's short form)."""
    name: str
    """The node's name, from its signed member record."""
    incarnation: int
    """The incarnation of the member as this agent last saw it."""
    last_seen: float
    """Monotonic time of the last message received from it."""
    last_heard: str
    """The same as a UTC timestamp: the Ready condition's ``lastHeartbeatTime``."""
    via: str | None
    """The neighbour on a shortest path toward it (None: none known)."""
    peers: list[str] = field(default_factory=list)
    """Its neighbours, from its signed member record."""
    ready: bool = True
    reason: str = "AgentReady"
    """Why Ready is what it is: ``AgentReady``, ``AgentSuspected`` (Ready: a suspicion is not
    a failure), ``AgentDead``, ``AgentLeft`` or ``Joining``."""
    last_transition: str = ""
    transitions: int = 0
    grace: float = 0.0
    """Seconds the node asked the others to add to its suspicion timeout (a hidden browser
    tab), capped at ``swim.max_grace``."""
    pub: bytes = b""
    """The node's public key, from its verified member records (checks its routed messages)."""
