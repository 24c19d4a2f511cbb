"""What a peer may put into our document: a byte budget per link, bounded stamps and sizes.

Members are trusted to write cluster objects, but one buggy or compromised member must not
do damage that outlives it (issue 10). Two kinds of damage come through the sync protocol:

* **Values nobody can overwrite or that nobody can hold.** The highest stamp wins, so a
  value stamped (2**53 - 1, 2**53 - 1) could never be replaced or deleted; a 25 MB value is
  held, logged and sent by every node. An update carrying a value stamped more than
  ``max_clock_skew`` ahead of our wall clock, or larger than ``max_object_bytes``, is
  refused as a whole (`check_update`): it is not applied, not logged, not relayed.
  Refusing the whole update is the only exact option: a Yjs update cannot be partly
  applied, and after applying, the value would already be relayed and on disk. A refused
  update is offered again by the sender's next anti-entropy answer, so a value refused
  because two honest clocks are a few seconds apart is taken once it is within the bound.
* **Volume.** Every update a link delivers is applied, persisted and relayed to every other
  neighbour. `LinkBudget` meters the update bytes of each link with a token bucket: an
  update (or an unrequested step 2) over the budget is dropped, and comes back at the next
  anti-entropy round, in the step 2 answering our step 1. A step 2 we asked for is taken
  whenever the link's budget is not in debt, whatever its size, and may put it in debt
  (down to one message): the catch-up of a large state when a node joins is never refused,
  and the long-run rate stays bounded by the budget all the same.

Pure Python (the browser node runs it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from p2pkube.pacing import LogPacer, TokenBucket

from .versioned import header_size, read_stamp
from .yupdate import update_values

__all__ = [
    "MAX_UNANSWERED_STEP1",
    "LinkBudget",
    "Refusal",
    "RefusalKind",
    "TokenBucket",
    "check_update",
]

log = logging.getLogger(__name__)

MAX_UNANSWERED_STEP1: Final = 4
"""Step 1s we count as awaiting an answer per link. Each step 1 we send (on link up, every
anti-entropy round, when nudging or switching generations) entitles the peer to one step 2
taken outside the budget; more than a few outstanding only happens when our sends were
dropped, and must not bank credit for a peer."""


class RefusalKind(Enum):
    """Why an update from a peer was refused."""

    FUTURE_STAMP = "future-stamp"
    OVERSIZE = "oversize"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first value of an update that may not be taken, and why."""

    kind: RefusalKind
    client: int
    clock: int
    detail: str

    def __str__(self) -> str:
        return f"value {self.client}:{self.clock} {self.detail}"


def check_update(
    update: bytes, *, wall_ms: int, max_skew_ms: int, max_value_bytes: int
) -> Refusal | None:
    """The reason to refuse `update`, or None if every value it writes may be taken.

    A value is refused when its stamp's wall time is more than `max_skew_ms` ahead of
    `wall_ms`, or when it is larger than `max_value_bytes` without its stamp header (as a
    local write is measured). Blobs without a valid stamp are left alone if small enough
    (they order below every version and read as absent).
    Raises UpdateFormatError (a ValueError) when the update cannot be read.
    """
    limit_wall = wall_ms + max_skew_ms
    for value in update_values(update):
        header = read_stamp(value.blob)
        size = len(value.blob)
        if size > max_value_bytes and header is not None:
            size -= header_size(value.blob)
        if size > max_value_bytes:
            return Refusal(
                RefusalKind.OVERSIZE,
                value.client,
                value.clock,
                f"is {size:,} bytes, over the {max_value_bytes:,}-byte limit "
                "(state.max_object_bytes)",
            )
        if header is not None and header[0].wall > limit_wall:
            return Refusal(
                RefusalKind.FUTURE_STAMP,
                value.client,
                value.clock,
                f"is stamped {(header[0].wall - wall_ms) / 1000:,.1f} s ahead of our clock "
                f"(state.max_clock_skew is {max_skew_ms / 1000:g} s)",
            )
    return None


@dataclass(slots=True)
class LinkBudget:
    """Per-link admission state: the byte budget, our unanswered step 1s, the log pacing."""

    bucket: TokenBucket
    unanswered_step1: int = 0
    """Step 1s sent on this link whose step 2 has not come yet (capped)."""
    pacer: LogPacer = field(default_factory=LogPacer)
    """Pacing of the log lines about refusals and drops on this link."""

    def asked(self) -> None:
        """We sent a step 1 on this link: its answer may come outside the budget."""
        self.unanswered_step1 = min(MAX_UNANSWERED_STEP1, self.unanswered_step1 + 1)

    def admit(self, size: int, *, step2: bool, now: float) -> bool:
        """Whether `size` update bytes from this link may be applied now.

        A step 2 answering one of our step 1s borrows (it is taken while the budget is not
        in debt); anything else needs the tokens."""
        solicited = step2 and self.unanswered_step1 > 0
        if step2 and self.unanswered_step1:
            self.unanswered_step1 -= 1
        return self.bucket.take(size, now, borrow=solicited)
