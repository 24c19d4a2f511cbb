"""How the long-running processes (``p2pkube join``, ``p2pkube signal``) write their logs.

``--log-format text`` (the default) is one human line per record; ``--log-format json`` is one
JSON object per line on stderr, for log shippers (Loki, Elasticsearch, journald's JSON
forwarders) that would otherwise have to parse the text: ``time`` (RFC 3339, UTC, with
milliseconds), ``level``, ``logger``, ``message`` and, when the record carries one,
``exception`` (the formatted traceback). The standard library's logging with a small
Formatter: nothing else to depend on, and the signaling server (which imports only the
standard library from p2pkube) uses it too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def rfc3339(timestamp: float) -> str:
    """``2026-12-07T16:50:01.123Z``: UTC, milliseconds, as Kubernetes components log."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``log_format``
    (what ``logging.basicConfig`` does: nothing when the root logger has handlers already,
    as in a test process). With json, Python's warnings are logged too, so that nothing but
    JSON reaches stderr."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.captureWarnings(log_format == "json")


def json_logging() -> bool:
    """Whether the root logger writes JSON (a line meant for stderr must be logged then)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
