"""The join tokens and verifiers a signaling server serves, read from the command line and
from files (``p2pkube signal --token-file / --verifier-file``, ``python -m signaling``).

What a token and a verifier are is :mod:`p2pkube.net.jointoken`'s; this module only collects
them, with errors fit for the command line.
"""

from __future__ import annotations

from pathlib import Path

from p2pkube.net.jointoken import Verifier, check_token, generate_token

__all__ = ["load_tokens", "load_verifiers"]


def load_tokens(
    token: str | None = None, token_file: str | Path | None = None
) -> tuple[list[str], bool]:
    """Collect the join tokens a server should accept; return ``(tokens, generated)``.

    ``token`` is a single token (``--token`` or ``$P2PKUBE_TOKEN``); ``token_file``
    holds one token per line, blank lines and lines starting with ``#`` ignored
    (``--token-file``).  Both may be given; their tokens are merged.  With
    neither, one token is generated and ``generated`` is True so the caller
    prints it: a server that silently admits nobody would be useless.

    Raises ``ValueError`` (with a message fit for the command line) on an
    unreadable or empty file or a token that is malformed or too short
    (:func:`check_token`).
    """
    tokens: list[str] = []
    if token is not None:
        tokens.append(check_token(token, "--token"))
    if token_file is not None:
        lines = _read_lines(token_file, "token")
        tokens += [check_token(text, where) for where, text in lines]
    if not tokens:
        return [generate_token()], True
    # Keep order (first token first) but drop duplicates.
    return list(dict.fromkeys(tokens)), False


def load_verifiers(path: str | Path) -> list[Verifier]:
    """The verifiers in a verifier file (``p2pkube signal --verifier-file``).

    One :meth:`Verifier.line` per line, blank lines and ``#`` comments ignored;
    ``ValueError`` naming the file and line otherwise.
    """
    verifiers = []
    for where, text in _read_lines(path, "verifier"):
        try:
            verifiers.append(Verifier.parse(text))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return verifiers


def _read_lines(path: str | Path, what: str) -> list[tuple[str, str]]:
    """The ``(file:line, text)`` of each line of ``path`` that is not blank or a comment."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc}") from None
    found = [
        (f"{path}:{lineno}", line.strip())
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not found:
        raise ValueError(f"{what} file {path} holds no {what}s")
    return found
