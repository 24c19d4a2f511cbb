"""``python -m signaling``: run a signaling server from the command line.

The p2pkube CLI has its own ``p2pkube signal`` built on the same
:func:`~signaling.tokens.load_tokens` and :func:`~signaling.server.run_server`;
this entry point exists so the server can run from a checkout (or a minimal
container) without the CLI: of p2pkube it needs only the wire format
(:mod:`p2pkube.net.signaling_wire`, :mod:`p2pkube.net.jointoken`, :mod:`p2pkube.logformat`,
standard library only).
"""

from __future__ import annotations

import argparse
import os
import sys

from p2pkube.logformat import LOG_FORMATS, configure_logging
from p2pkube.net.jointoken import Verifier

from .server import SignalingServer, run_server
from .tokens import load_tokens, load_verifiers


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (separate so tests and docs can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="python -m signaling",
        description="p2pkube signaling server: introduces the peers of a cluster.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port, 0 for any free one (default 8765)"
    )
    parser.add_argument(
        "--token-file",
        help="file with one join token per line ('#' starts a comment line)",
    )
    parser.add_argument(
        "--token",
        help="join token admitting to the cluster (default $P2PKUBE_TOKEN; on the command "
        "line other users see it in ps)",
    )
    parser.add_argument(
        "--verifier-file",
        help="file with one cluster verifier per line (p2pkube token --verifier): serve "
        "those clusters without their tokens",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default) or json: one JSON object per line on stderr",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, print the join token if one was generated, serve."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.token is not None:
        print(
            "warning: --token on the command line is visible to every user of this machine; "
            "use --token-file or $P2PKUBE_TOKEN",
            file=sys.stderr,
        )
    token = args.token if args.token is not None else os.environ.get("P2PKUBE_TOKEN") or None
    try:
        verifiers = load_verifiers(args.verifier_file) if args.verifier_file else []
        if token is None and args.token_file is None and verifiers:
            tokens: list[str] = []
            generated = False
        else:
            tokens, generated = load_tokens(token, args.token_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if generated:
        print(f"join token: {tokens[0]}", flush=True)
    verifiers += [Verifier.from_token(t) for t in tokens]
    del tokens, token
    if generated:
        print(f"cluster: {verifiers[-1].cluster}", flush=True)

    def ready(server: SignalingServer) -> None:
        print(f"signaling server: {server.url}", flush=True)

    try:
        run_server(args.host, args.port, verifiers, on_ready=ready)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
