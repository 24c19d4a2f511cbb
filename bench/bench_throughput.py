"""Data-channel throughput between two processes on loopback, versus a plain TCP stream.

What is compared, same payload each time (``--mib`` MiB in ``--message-kib`` KiB messages, sent
as fast as the stack accepts them, then one "done" message back):

* ``tcp``      — an asyncio TCP stream (write + drain per message): the loopback floor;
* ``aiortc``   — a raw aiortc RTCDataChannel (negotiated id 0, ordered, reliable) with aiortc's
  defaults: ICE, DTLS and aiortc's pure-Python SCTP;
* ``aiortc-128k`` — the same with the one SCTP setting PeerLink changes: a 128 KiB receive
  window instead of 1 MiB (separates the cost of that setting from the cost of our framing);
* ``peerlink`` — what an agent uses: ``p2pkube.net.link.PeerLink`` with its Ed25519 handshake,
  msgpack frames fragmented at 60 KiB and its 128 KiB SCTP receive window;
* ``aiortc-1proc`` — raw aiortc with both peers in one process (for reference).

Each pair runs in two fresh processes (sender, receiver); the sender times from its first send
to the receiver's "done", so no clock is shared. With ``uvloop`` installed every two-process
variant also runs under uvloop. CPU% of each process over the transfer tells what limits it;
``--profile`` adds a cProfile of one aiortc sender (top functions by own time).

Run: ``.venv/bin/python -m bench.bench_throughput [--mib 20] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.benchlib import (
    REPO,
    emit,
    machine_busy_seconds,
    markdown_table,
    read_line,
    uvloop_available,
)
from p2pkube.devcluster import free_port

TITLE = "Data-channel throughput"
"""The heading of this benchmark's section in docs/benchmarks.md."""
MB = 1_000_000
TOKEN = "throughput-bench-token-0123456789"
SETTLE_SECONDS = 0.5
"""Pause between "connected" and the first send, so ICE/DTLS start-up work is not measured."""
CHILD_TIMEOUT = 120.0
"""Longest a transfer may take before the pair is killed (aiortc at ~1 MB/s would need 21 s)."""


# --- endpoints (child processes) -------------------------------------------------------------


class Endpoint:
    """One side of a WebRTC pair; counts what it receives and notices the "done" reply."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.first_at: float | None = None
        self.cpu_at_first = 0.0
        self.opened = asyncio.Event()
        self.complete = asyncio.Event()
        self.done = asyncio.Event()

    def _count(self, data: bytes) -> None:
        if data == b"done":
            self.done.set()
            return
        if self.first_at is None:
            self.first_at = time.perf_counter()
            self.cpu_at_first = time.process_time()
        self.received += len(data)
        if self.received >= self.expected:
            self.complete.set()

    async def offer(self) -> str:
        raise NotImplementedError

    async def answer(self, sdp: str) -> str:
        raise NotImplementedError

    async def accept(self, sdp: str) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def channel(self) -> Any:
        """The aiortc RTCDataChannel underneath."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class RawEndpoint(Endpoint):
    """A bare aiortc data channel, configured as PeerLink configures its own but otherwise
    with aiortc's defaults (1 MiB receive window, no framing, no handshake)."""

    def __init__(self, expected: int, receive_window: int | None = None) -> None:
        super().__init__(expected)
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._channel = self.pc.createDataChannel("bench", negotiated=True, id=0, ordered=True)
        if receive_window:
            self.pc.sctp._advertised_rwnd = receive_window  # as PeerLink does
        self._channel.on("open", self.opened.set)
        self._channel.on("message", self._count)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> str:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def send(self, data: bytes) -> None:
        self._channel.send(data)

    def channel(self) -> Any:
        return self._channel

    async def close(self) -> None:
        await self.pc.close()


class LinkEndpoint(Endpoint):
    """p2pkube's PeerLink: handshake first, then SYNC frames (what state sync sends)."""

    def __init__(self, expected: int, initiator: bool) -> None:
        super().__init__(expected)
        from p2pkube.net.frames import Frame
        from p2pkube.net.handshake import Handshake
        from p2pkube.net.identity import NodeIdentity, verify_signature
        from p2pkube.net.jointoken import cluster_id
        from p2pkube.net.link import PeerLink
        from p2pkube.net.settings import TransportSettings

        def on_frame(link: PeerLink, frame: Frame) -> None:
            self._count(frame.body)

        name = "sender" if initiator else "receiver"
        handshake = Handshake(
            NodeIdentity.generate(),
            name,
            "native",
            cluster_id(TOKEN),
            TOKEN,
            check_signature=verify_signature,
        )
        self.link = PeerLink(
            expected_node=None,
            session="bench",
            initiator=initiator,
            handshake=handshake,
            settings=TransportSettings(),
            on_established=lambda link: self.opened.set(),
            on_frame=on_frame,
            on_closed=lambda link: None,
        )

    async def offer(self) -> str:
        return await self.link.create_offer()

    async def answer(self, sdp: str) -> str:
        return await self.link.accept_offer(sdp)

    async def accept(self, sdp: str) -> None:
        await self.link.accept_answer(sdp)

    def send(self, data: bytes) -> None:
        from p2pkube.net.frames import FrameType

        if not self.link.send(FrameType.SYNC, data):
            raise RuntimeError(f"link refused a frame: {self.link.close_reason}")

    def channel(self) -> Any:
        return self.link._channel  # bench-only: to wait until the last frame has left

    async def close(self) -> None:
        await self.link.close("benchmark over", notify=False)


def make_endpoint(variant: str, expected: int, initiator: bool) -> Endpoint:
    from p2pkube.net import ice

    ice.use_host_addresses(["127.0.0.1"])  # aioice never offers 127.0.0.1 by itself
    if variant == "peerlink":
        return LinkEndpoint(expected, initiator)
    if variant == "aiortc-128k":
        return RawEndpoint(expected, receive_window=128 * 1024)
    return RawEndpoint(expected)


async def send_all(endpoint: Endpoint, count: int, message: bytes) -> None:
    """Queue every message at once, as the agent queues a step 2 (no application pacing)."""
    for _ in range(count):
        endpoint.send(message)


async def drain_and_close(endpoint: Endpoint) -> None:
    """Let the last message (the "done" reply) leave before closing: aiortc drops queued data."""
    channel = endpoint.channel()
    if channel.bufferedAmount:
        drained = asyncio.Event()
        channel.on("bufferedamountlow", drained.set)  # fires when it falls to the threshold, 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), timeout=2)
    await asyncio.sleep(0.2)  # queued in SCTP is not yet acknowledged by the peer
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await endpoint.close()


def profile_rows(profiler: cProfile.Profile, top: int = 8) -> list[dict[str, Any]]:
    """The ``top`` functions by own time, as rows for the report."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    out = []
    for (filename, line, func), (_, calls, tottime, _, _) in rows:
        short = "/".join(filename.split("/")[-2:])
        out.append(
            {
                "function": f"{short}:{line}({func})",
                "calls": calls,
                "ownSeconds": round(tottime, 3),
                "share": round(100 * tottime / total, 1) if total else 0.0,
            }
        )
    return out


async def run_sender(args: argparse.Namespace) -> dict[str, Any]:
    count, message = args.count, b"x" * args.message
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", args.port), timeout=10
    )
    profiler = cProfile.Profile() if args.profile else None
    try:
        if args.variant == "tcp":
            await asyncio.sleep(SETTLE_SECONDS)
            start, cpu, busy = time.perf_counter(), time.process_time(), machine_busy_seconds()
            if profiler:
                profiler.enable()
            for _ in range(count):
                writer.write(message)
                await asyncio.wait_for(writer.drain(), timeout=CHILD_TIMEOUT)
            line = await asyncio.wait_for(reader.readline(), timeout=CHILD_TIMEOUT)
            if line != b"done\n":
                raise RuntimeError(f"receiver said {line!r}")
        else:
            endpoint = make_endpoint(args.variant, 0, initiator=True)
            writer.write(json.dumps({"sdp": await endpoint.offer()}).encode() + b"\n")
            answer = json.loads(await asyncio.wait_for(reader.readline(), timeout=30))
            await endpoint.accept(answer["sdp"])
            await asyncio.wait_for(endpoint.opened.wait(), timeout=30)
            await asyncio.sleep(SETTLE_SECONDS)
            start, cpu, busy = time.perf_counter(), time.process_time(), machine_busy_seconds()
            if profiler:
                profiler.enable()
            await send_all(endpoint, count, message)
            await asyncio.wait_for(endpoint.done.wait(), timeout=CHILD_TIMEOUT)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        busy = machine_busy_seconds() - busy
        if profiler:
            profiler.disable()
        if args.variant != "tcp":
            await drain_and_close(endpoint)
    finally:
        writer.close()
    result: dict[str, Any] = {"seconds": elapsed, "cpuSeconds": cpu, "machineBusySeconds": busy}
    if profiler:
        result["profile"] = profile_rows(profiler)
    return result


async def run_receiver(args: argparse.Namespace) -> dict[str, Any]:
    total = args.count * args.message
    finished: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if args.variant == "tcp":
                received, start, cpu = 0, 0.0, 0.0
                while received < total:
                    chunk = await asyncio.wait_for(reader.read(1 << 20), timeout=CHILD_TIMEOUT)
                    if not chunk:
                        raise EOFError("sender went away")
                    if not received:
                        start, cpu = time.perf_counter(), time.process_time()
                    received += len(chunk)
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
                writer.write(b"done\n")
                await asyncio.wait_for(writer.drain(), timeout=10)
            else:
                endpoint = make_endpoint(args.variant, total, initiator=False)
                offer = json.loads(await asyncio.wait_for(reader.readline(), timeout=30))
                writer.write(json.dumps({"sdp": await endpoint.answer(offer["sdp"])}).encode())
                writer.write(b"\n")
                await asyncio.wait_for(endpoint.complete.wait(), timeout=CHILD_TIMEOUT)
                assert endpoint.first_at is not None
                elapsed = time.perf_counter() - endpoint.first_at
                cpu = time.process_time() - endpoint.cpu_at_first
                endpoint.send(b"done")
                await drain_and_close(endpoint)
            finished.set_result({"seconds": elapsed, "cpuSeconds": cpu, "bytes": total})
        except Exception as exc:
            if not finished.done():
                finished.set_exception(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    print("listening", flush=True)
    async with server:
        return await asyncio.wait_for(finished, timeout=CHILD_TIMEOUT + 60)


async def run_one_process(args: argparse.Namespace) -> dict[str, Any]:
    """Both aiortc peers on one event loop (the earlier measurement, for reference)."""
    total = args.count * args.message
    sender = make_endpoint("aiortc", 0, initiator=True)
    receiver = make_endpoint("aiortc", total, initiator=False)
    await sender.accept(await receiver.answer(await sender.offer()))
    async with asyncio.timeout(30):
        await sender.opened.wait()
        await receiver.opened.wait()
    await asyncio.sleep(SETTLE_SECONDS)
    start, cpu, busy = time.perf_counter(), time.process_time(), machine_busy_seconds()
    await send_all(sender, args.count, b"x" * args.message)
    await asyncio.wait_for(receiver.complete.wait(), timeout=CHILD_TIMEOUT)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    busy = machine_busy_seconds() - busy
    await asyncio.gather(drain_and_close(sender), drain_and_close(receiver))
    return {"seconds": elapsed, "cpuSeconds": cpu, "bytes": total, "machineBusySeconds": busy}


def run_child(args: argparse.Namespace) -> None:
    """Entry point of a child process: run one role, print its result as JSON."""
    roles: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
        "sender": run_sender,
        "receiver": run_receiver,
        "one-process": run_one_process,
    }
    import logging

    logging.basicConfig(level=logging.WARNING)
    coro = roles[args.role](args)
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(result), flush=True)


# --- the parent: start pairs, collect, print ---------------------------------------------------


def child_args(
    args: argparse.Namespace, role: str, variant: str, loop: str, port: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.bench_throughput",
        "--role",
        role,
        "--variant",
        variant,
        "--loop",
        loop,
        "--port",
        str(port),
        "--count",
        str(args.count),
        "--message",
        str(args.message),
    ]


def udp_receive_buffer_drops() -> int | None:
    """Datagrams the kernel dropped because a UDP socket's receive buffer was full (Linux,
    whole network namespace). aiortc answers such a loss with a retransmission timeout, a
    stall of a second or more, so this explains most slow outliers."""
    try:
        lines = [line.split() for line in open("/proc/net/snmp") if line.startswith("Udp:")]
        return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RcvbufErrors"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def run_pair(args: argparse.Namespace, variant: str, loop: str, profile: bool) -> dict[str, Any]:
    """One transfer between two fresh processes; throughput as the sender measured it."""
    port = free_port()
    drops_before = udp_receive_buffer_drops()
    receiver = subprocess.Popen(
        child_args(args, "receiver", variant, loop, port), stdout=subprocess.PIPE, cwd=REPO
    )
    sender: subprocess.Popen[bytes] | None = None
    try:
        read_line(receiver, 30)  # "listening"
        command = child_args(args, "sender", variant, loop, port)
        sender = subprocess.Popen(
            command + (["--profile"] if profile else []), stdout=subprocess.PIPE, cwd=REPO
        )
        sent_out, _ = sender.communicate(timeout=CHILD_TIMEOUT + 60)
        received_out, _ = receiver.communicate(timeout=30)
        if sender.returncode or receiver.returncode:
            raise RuntimeError(f"{variant}/{loop}: a child failed (see its stderr above)")
    finally:
        for process in (receiver, sender):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    drops_after = udp_receive_buffer_drops()
    sent = json.loads(sent_out.decode().strip().splitlines()[-1])
    received = json.loads(received_out.decode().strip().splitlines()[-1])
    total = args.count * args.message
    return {
        "udpDrops": (
            drops_after - drops_before
            if drops_after is not None and drops_before is not None and variant != "tcp"
            else None
        ),
        "mbPerSecond": total / sent["seconds"] / MB,
        "seconds": sent["seconds"],
        "senderCpuPercent": 100 * sent["cpuSeconds"] / sent["seconds"],
        "receiverCpuPercent": 100 * received["cpuSeconds"] / max(received["seconds"], 1e-9),
        # Cores busy with anything but this pair (other tests share the machine), on average.
        "otherCores": max(
            0.0,
            (sent["machineBusySeconds"] - sent["cpuSeconds"] - received["cpuSeconds"])
            / sent["seconds"],
        ),
        "profile": sent.get("profile"),
    }


def run_in_process(args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        child_args(args, "one-process", "aiortc", "asyncio", 0),
        capture_output=True,
        timeout=CHILD_TIMEOUT + 60,
        check=True,
        cwd=REPO,
    ).stdout
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "udpDrops": None,
        "mbPerSecond": result["bytes"] / result["seconds"] / MB,
        "seconds": result["seconds"],
        "senderCpuPercent": 100 * result["cpuSeconds"] / result["seconds"],
        "receiverCpuPercent": float("nan"),  # same process as the sender
        "otherCores": max(
            0.0, (result["machineBusySeconds"] - result["cpuSeconds"]) / result["seconds"]
        ),
    }


def table(result: dict[str, Any]) -> str:
    """The throughput table of a result (also rendered by run_all.py)."""
    headers = ["variant", "event loop", "MB/s (median)", "min", "max", "vs tcp"]
    headers += ["sender CPU %", "receiver CPU %", "UDP drops", "other load (cores)"]
    rows = [
        [
            r["variant"],
            r["loop"],
            r["mbPerSecond"],
            r["worstMbPerSecond"],
            r["bestMbPerSecond"],
            r["vsTcp"] if r["vsTcp"] is not None else "-",
            r["senderCpuPercent"],
            r["receiverCpuPercent"],
            r["udpDrops"] if r["udpDrops"] is not None else "-",
            r.get("otherCores", "-"),
        ]
        for r in result["results"]
    ]
    return markdown_table(headers, rows)


def profile_table(profile: dict[str, Any]) -> str:
    return markdown_table(
        ["function", "calls", "own s", "share %"],
        [[p["function"], p["calls"], p["ownSeconds"], p["share"]] for p in profile["top"]],
    )


# --- docs/benchmarks.md ---------------------------------------------------------------------------


def render(r: dict[str, Any]) -> list[str]:
    """The variants, their table, the sender's profile, and what caps PeerLink below TCP."""
    lines = [
        f"{r['bytes'] / 2**20:g} MiB in {r['messageBytes'] // 1024} KiB messages from one "
        "process to another on loopback, queued as fast as the stack accepts them; the sender "
        "times from its first send until the receiver's one-message reply that it has "
        f"everything (no shared clock). Median of {r['reps']} transfers, each between two "
        "fresh processes. MB = 10^6 bytes. CPU % is of one core, over the transfer.",
        "",
        "* `tcp`: plain asyncio TCP stream (write + drain), the baseline;",
        "* `aiortc`: a raw aiortc data channel with aiortc's defaults (1 MiB SCTP receive window);",
        "* `aiortc-128k`: the same with PeerLink's one SCTP change, a 128 KiB receive window;",
        "* `peerlink`: what agents use, `p2pkube.net.link.PeerLink` after its Ed25519 "
        "handshake, msgpack SYNC frames fragmented at 60 KiB;",
        "* `aiortc-1proc`: raw aiortc with both peers in one process (one core for both).",
        "",
        table(r),
    ]
    profile = r.get("profile")
    if profile and "top" not in profile:
        lines += [
            "",
            "The cProfile run of one `aiortc` sender failed twice ("
            + "; ".join(profile["failedAttempts"])
            + "): no profile this time.",
        ]
        profile = None
    if profile:
        lines += [
            "",
            f"cProfile of one `aiortc` sender (asyncio; {profile['mbPerSecondUnderProfiler']} "
            "MB/s under the profiler), top functions by own time:",
            "",
            profile_table(profile),
        ]

    lines += [
        "",
        "**Target**: none set; this is the ceiling for state sync (a full step 2 of a large "
        "document travels at this rate).",
        "",
    ]
    limits = _limits(r, profile)
    return lines if limits is None else [*lines, limits]


def _limits(r: dict[str, Any], profile: dict[str, Any] | None) -> str | None:
    """What caps PeerLink below TCP, from the median runs and the profile (None when a
    variant it compares did not run)."""
    ours, raw, tcp = _find(r, "peerlink"), _find(r, "aiortc"), _find(r, "tcp")
    if not (ours and raw and tcp):
        return None
    top = profile["top"][0] if profile else None
    busy = max(ours["senderCpuPercent"], ours["receiverCpuPercent"])
    text = (
        f"**What limits it**: TCP moves {tcp['mbPerSecond'] / ours['mbPerSecond']:.0f}x "
        "more than PeerLink. aiortc implements SCTP (cutting messages into ~1.2 KB DATA "
        "chunks, SACKs, congestion control, retransmission queues) and DTLS record handling "
        "in pure Python, per packet. "
    )
    if busy >= 80:
        text += (
            f"In the median PeerLink run one side is CPU-bound (sender "
            f"{ours['senderCpuPercent']:g}%, receiver {ours['receiverCpuPercent']:g}% of a "
            "core): that per-packet Python work is the ceiling."
        )
    elif ours.get("otherCores", 0) >= 0.5:
        text += (
            f"In the median PeerLink run the sender got {ours['senderCpuPercent']:g}% and "
            f"the receiver {ours['receiverCpuPercent']:g}% of a core while other "
            f"processes kept {ours['otherCores']:g} cores busy: on this shared machine "
            "the pair was short of CPU, not idle."
        )
    else:
        text += (
            f"Yet in the median PeerLink run neither side is saturated (sender "
            f"{ours['senderCpuPercent']:g}%, receiver {ours['receiverCpuPercent']:g}% of a "
            "core): the transfer also waits on SCTP itself (slow start from a small "
            "congestion window, SACK round trips, retransmission timeouts)."
        )
    if top:
        text += (
            f" The profiled raw-aiortc sender spends the most own time in "
            f"`{top['function']}` ({top['share']:g}%)."
        )
    dropped = {
        f"{x['variant']}/{x['loop']}": x["udpDrops"] for x in r["results"] if x.get("udpDrops")
    }
    if dropped:
        text += (
            " The kernel dropped datagrams for a full UDP receive buffer during "
            + ", ".join(f"{k} ({v:,})" for k, v in dropped.items())
            + ": aiortc repairs such a loss only after a retransmission timeout (1 s "
            "minimum), the slow outliers. That is why PeerLink advertises a 128 KiB SCTP "
            "receive window instead of aiortc's 1 MiB (more than the kernel's default UDP "
            "buffer)."
        )
    text += (
        " uvloop speeds up only the event-loop part of the work; with both peers in one "
        "process (1proc) both stacks share one core."
    )
    return text


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table."""
    ours, tcp = _find(result, "peerlink"), _find(result, "tcp")
    if not (ours and tcp):
        return []
    return [
        [
            "data-channel throughput",
            f"{ours['mbPerSecond']:g} MB/s (TCP: {tcp['mbPerSecond']:g} MB/s)",
            "-",
            "-",
        ]
    ]


def _find(result: dict[str, Any], variant: str, loop: str = "asyncio") -> dict[str, Any] | None:
    """The row of ``variant`` on ``loop``, if it ran."""
    return next(
        (x for x in result["results"] if x["variant"] == variant and x["loop"] == loop), None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=20, help="payload per transfer (MiB)")
    parser.add_argument("--message-kib", type=int, default=64, help="message size (KiB)")
    parser.add_argument("--reps", type=int, default=3, help="transfers per variant (median)")
    parser.add_argument("--variants", default="tcp,aiortc,aiortc-128k,peerlink,aiortc-1proc")
    parser.add_argument("--loops", default="asyncio,uvloop", help="uvloop skipped if missing")
    parser.add_argument("--profile", action="store_true", help="cProfile one aiortc sender")
    parser.add_argument("--profile-mib", type=int, default=4, help="payload of the profiled run")
    # Child-process roles (internal).
    parser.add_argument("--role", choices=["sender", "receiver", "one-process"])
    parser.add_argument("--variant", default="tcp")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--message", type=int, default=0)
    args = parser.parse_args()
    if args.role:
        run_child(args)
        return

    args.message = args.message_kib * 1024
    args.count = args.mib * 1024 * 1024 // args.message
    loops = [loop for loop in args.loops.split(",") if loop != "uvloop" or uvloop_available()]
    variants = args.variants.split(",")
    total = args.count * args.message
    print(
        f"{total:,} bytes per transfer in {args.count} messages of {args.message:,} bytes, "
        f"{args.reps} transfers per variant, loops: {', '.join(loops)}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for loop in loops:
        for variant in variants:
            if variant == "aiortc-1proc" and loop != "asyncio":
                continue
            runs = []
            for _ in range(args.reps if variant != "aiortc-1proc" else 1):
                if variant == "aiortc-1proc":
                    runs.append(run_in_process(args))
                else:
                    runs.append(run_pair(args, variant, loop, profile=False))
            best = max(runs, key=lambda r: r["mbPerSecond"])
            row = {
                "variant": variant,
                "loop": loop,
                "mbPerSecond": round(statistics.median(r["mbPerSecond"] for r in runs), 2),
                "bestMbPerSecond": round(best["mbPerSecond"], 2),
                "worstMbPerSecond": round(min(r["mbPerSecond"] for r in runs), 2),
                "senderCpuPercent": round(
                    statistics.median(r["senderCpuPercent"] for r in runs), 1
                ),
                "receiverCpuPercent": round(
                    statistics.median(r["receiverCpuPercent"] for r in runs), 1
                ),
                "runs": len(runs),
                "otherCores": round(statistics.median(r["otherCores"] for r in runs), 2),
                "udpDrops": (
                    sum(r["udpDrops"] for r in runs)
                    if all(r["udpDrops"] is not None for r in runs)
                    else None
                ),
            }
            results.append(row)
            runs_text = ", ".join(f"{r['mbPerSecond']:.2f}" for r in runs)
            print(
                f"  {variant:<13} {loop:<8} {row['mbPerSecond']:8.2f} MB/s ({runs_text}), "
                f"CPU sender {row['senderCpuPercent']}% receiver {row['receiverCpuPercent']}%, "
                f"UDP receive-buffer drops {row['udpDrops']}, other load {row['otherCores']} cores",
                flush=True,
            )
    for row in results:
        tcp = next((r for r in results if r["variant"] == "tcp" and r["loop"] == row["loop"]), None)
        row["vsTcp"] = round(row["mbPerSecond"] / tcp["mbPerSecond"], 4) if tcp else None
        raw = next(
            (r for r in results if r["variant"] == "aiortc" and r["loop"] == row["loop"]), None
        )
        row["vsAiortc"] = round(row["mbPerSecond"] / raw["mbPerSecond"], 2) if raw else None

    profile = None
    if args.profile:
        # Smaller: the profiler slows aiortc ~4x, and the shares settle within a few MiB.
        small = argparse.Namespace(
            **{**vars(args), "count": args.profile_mib * 2**20 // args.message}
        )
        # A diagnostic: a transfer that stalls under the profiler (raw aiortc retransmitting
        # what the 1 MiB window lost; seen once in many runs) is tried again, and if it
        # fails again it is reported as such rather than losing the figures above.
        failures: list[str] = []
        for _ in range(2):
            try:
                profiled = run_pair(small, "aiortc", "asyncio", profile=True)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failures.append(str(exc))
                continue
            profile = {
                "variant": "aiortc",
                "mbPerSecondUnderProfiler": round(profiled["mbPerSecond"], 2),
                "top": profiled["profile"],
                "failedAttempts": failures,
            }
            break
        else:
            profile = {"variant": "aiortc", "failedAttempts": failures}

    result = {
        "bench": "throughput",
        "bytes": total,
        "messageBytes": args.message,
        "reps": args.reps,
        "results": results,
        "profile": profile,
    }
    print()
    print(table(result))
    if profile and "top" in profile:
        print(
            f"\ncProfile of one aiortc sender ({profile['mbPerSecondUnderProfiler']} MB/s "
            "under the profiler), top functions by own time:"
        )
        print(profile_table(profile))
    elif profile:
        failed = "; ".join(profile["failedAttempts"])
        print(f"\nno cProfile: the profiled aiortc sender failed twice ({failed})")
    emit(result)


if __name__ == "__main__":
    main()
