"""Frames and the handshake: hostile input is rejected with a reason, good input round-trips."""

from __future__ import annotations

import msgpack
import pytest

from p2pkube.net.frames import (
    FRAGMENT_BYTES,
    PROTOCOL_VERSION,
    FrameError,
    FrameType,
    Reassembler,
    decode_frame,
    deflate,
    encode_frame,
    fragment,
    inflate,
)
from p2pkube.net.handshake import Handshake
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.keys import node_id_from_public_key

V = PROTOCOL_VERSION


def test_frame_roundtrip() -> None:
    frame = decode_frame(encode_frame(FrameType.SYNC, b"\x00\x01"))
    assert frame.type is FrameType.SYNC and frame.body == b"\x00\x01"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1\xff garbage", "not msgpack"),
        (msgpack.packb({"a": 1}), "envelope"),
        # Version 1 is the frames of agents before signed heartbeats and routes; version 2
        # the last with heartbeats (type 4), before SWIM.
        (msgpack.packb([1, 3, b""]), "version"),
        (msgpack.packb([2, 3, b""]), "version"),
        # Type 4 was HEARTBEAT: reserved, now unknown, so a peer that sends it is dropped.
        (msgpack.packb([V, 4, {"ttl": 1, "hb": b"", "sig": b""}]), "unknown frame type"),
        (msgpack.packb([V, 99, {}]), "unknown frame type"),
        (msgpack.packb([V, int(FrameType.SYNC), "text"]), "bytes"),
        (msgpack.packb([V, int(FrameType.BYE), {}]), "missing field 'reason'"),
        (msgpack.packb([V, int(FrameType.BYE), {"reason": 5}]), "type int"),
        (b"x" * 100, "not msgpack"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_frame(data)


def test_oversize_frame_rejected_before_parsing() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        decode_frame(b"\x00" * 2048, max_bytes=1024)


def test_fragmentation_roundtrip_and_limits() -> None:
    payload = bytes(range(256)) * 1000  # 256 kB: several fragments
    pieces = list(fragment(encode_frame(FrameType.SYNC, payload)))
    assert len(pieces) > 3 and all(len(p) <= FRAGMENT_BYTES + 64 for p in pieces)
    reassembler = Reassembler()
    frames = [reassembler.feed(p) for p in pieces]
    assert frames[:-1] == [None] * (len(pieces) - 1)
    assert frames[-1] is not None and frames[-1].body == payload

    small = Reassembler(max_bytes=100_000)
    with pytest.raises(FrameError, match="exceeds"):
        for piece in pieces:
            small.feed(piece)

    out_of_order = Reassembler()
    with pytest.raises(FrameError, match="out of sequence"):
        out_of_order.feed(pieces[1])


def test_inflate_bounds_what_a_peer_can_make_us_expand() -> None:
    state = b"pod " * 50_000
    packed = deflate(state)
    assert len(packed) * 20 < len(state) and inflate(packed) == state
    with pytest.raises(FrameError, match="beyond"):
        inflate(deflate(b"\0" * 2_000_000), max_bytes=1_000_000)  # a bomb: refused unexpanded
    with pytest.raises(FrameError, match="zlib"):
        inflate(b"not zlib at all")
    with pytest.raises(FrameError, match="truncated"):
        inflate(packed[:-8])


def test_urgent_frames_may_come_between_fragments_others_may_not() -> None:
    """A sender puts SWIM, PING and small ROUTE frames ahead of its queued bulk frames, so
    they can arrive between the pieces of a fragmented SYNC; a SYNC there is a violation."""
    payload = bytes(range(256)) * 1000
    pieces = list(fragment(encode_frame(FrameType.SYNC, payload)))
    reassembler = Reassembler()
    assert reassembler.feed(pieces[0]) is None
    swim = reassembler.feed(encode_frame(FrameType.SWIM, [1, "probe"]))
    assert swim is not None and swim.type is FrameType.SWIM
    assert reassembler.feed(encode_frame(FrameType.PING, {})) is not None
    frames = [reassembler.feed(p) for p in pieces[1:]]
    assert frames[-1] is not None and frames[-1].body == payload

    strict = Reassembler()
    strict.feed(pieces[0])
    with pytest.raises(FrameError, match="SYNC interleaved"):
        strict.feed(encode_frame(FrameType.SYNC, b"x"))


def _pair() -> tuple[Handshake, Handshake, NodeIdentity, NodeIdentity]:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    return (
        Handshake(a, "a", "native", "c1", "token", check_signature=verify_signature),
        Handshake(b, "b", "native", "c1", "token", check_signature=verify_signature),
        a,
        b,
    )


async def test_handshake_proves_identity_and_membership() -> None:
    ha, hb, a, b = _pair()
    ha.accept_hello(hb.local.to_body(), expected_node=b.node_id)
    hb.accept_hello(ha.local.to_body(), expected_node=None)
    await hb.verify_auth(await ha.make_auth("fp-a", "fp-b"), "fp-b", "fp-a")
    await ha.verify_auth(await hb.make_auth("fp-b", "fp-a"), "fp-a", "fp-b")
    assert node_id_from_public_key(a.public_key) == a.node_id


async def test_handshake_rejects_wrong_token_wrong_key_and_other_session() -> None:
    ha, hb, a, b = _pair()
    outsider = Handshake(b, "b", "native", "c1", "other-token", check_signature=verify_signature)
    ha.accept_hello(outsider.local.to_body(), expected_node=b.node_id)
    outsider.accept_hello(ha.local.to_body(), expected_node=None)
    with pytest.raises(FrameError, match="membership"):
        await ha.verify_auth(await outsider.make_auth("fp-b", "fp-a"), "fp-a", "fp-b")

    ha, hb, a, b = _pair()
    ha.accept_hello(hb.local.to_body(), expected_node=b.node_id)
    hb.accept_hello(ha.local.to_body(), expected_node=None)
    with pytest.raises(FrameError, match="membership"):  # relayed into another DTLS session
        await ha.verify_auth(await hb.make_auth("fp-b", "fp-a"), "fp-a", "fp-other")

    ha, hb, a, b = _pair()
    forged = dict(hb.local.to_body(), node=a.node_id)
    with pytest.raises(FrameError, match="does not match its public key"):
        ha.accept_hello(forged, expected_node=None)
    with pytest.raises(FrameError, match="expected node"):
        ha.accept_hello(hb.local.to_body(), expected_node=a.node_id)
    with pytest.raises(FrameError, match="cluster"):
        ha.accept_hello(dict(hb.local.to_body(), cluster="c2"), expected_node=None)


def test_identity_is_kept_in_the_data_dir(tmp_path) -> None:
    first = NodeIdentity.load_or_create(tmp_path)
    again = NodeIdentity.load_or_create(tmp_path)
    assert first.node_id == again.node_id
    assert (tmp_path / "identity.key").stat().st_mode & 0o777 == 0o600
