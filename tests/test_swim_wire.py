"""The SWIM frame body's decoder (`p2pkube.membership.swim_wire.decode`): what it refuses as
the wrong shape, so that the link layer drops the neighbour that sent it. Between real
agents: tests/test_hostile_peer.py::test_hostile_frames_drop_the_sender_not_the_agent."""

from __future__ import annotations

import re
from typing import Any

import pytest

from p2pkube.membership.swim_messages import MAX_PROOF, Gossip, Status, Update
from p2pkube.membership.swim_wire import decode, encode
from p2pkube.net.frames import FrameError

LIMITS = {"max_updates": 256, "max_states": 16384}


def test_an_update_round_trips_with_a_proof_of_the_largest_size() -> None:
    update = Update("n1", Status.ALIVE, 7, "n1", b"p" * MAX_PROOF, 1.5)
    assert decode(encode(Gossip((update,))), **LIMITS) == Gossip((update,))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([5, [["n1", 0, 7, "n1", b"p" * (MAX_PROOF + 1), 0.0]]], "proof must be nil or bytes"),
        ([5, [["n1", 0, 7, "n1", "text", 0.0]]], "proof must be nil or bytes"),
        ([5, [["n1", 2, 7, "n2", None, 0.0]] * 257], "257 updates (at most 256)"),
        ([5, [["n1", 9, 7, "n1", None, 0.0]]], "status 9 is unknown"),
        ({"kind": 5}, "non-empty array"),
    ],
)
def test_the_wrong_shape_is_a_frame_error(body: Any, reason: str) -> None:
    with pytest.raises(FrameError, match=re.escape(reason)):
        decode(body, **LIMITS)
