"""How a warning travels on an API answer: a ``Warning`` header, as Kubernetes sends them.

The agent adds one per warning of a write (a Kubernetes field it ignores); the client hands
each to its ``on_warning`` hook, and the CLI prints ``Warning: <text>`` as kubectl does. Both
ends import this module, which needs only the standard library (the CLI loads no aiohttp).
"""

from __future__ import annotations

import re

HEADER = "Warning"


def warning_header(text: str) -> str:
    """A ``Warning`` header value as Kubernetes sends one (RFC 7234's warn-code 299, agent
    ``-``, the text quoted); header values are ASCII, so anything else is escaped."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted.encode("ascii", "backslashreplace").decode()}"'


def parse_warning_header(value: str) -> str:
    """The text of a ``Warning`` header value (:func:`warning_header`'s inverse)."""
    code, _, rest = value.partition(" ")
    _agent, _, quoted = rest.partition(" ")
    if code != "299" or not (quoted.startswith('"') and quoted.endswith('"')):
        return value
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])
