"""All agent settings in one place, each a named field with a documented default.

Sections are the settings dataclasses of the layers (transport, membership, swim, state,
rpc, blobs, ...). Any field
can be overridden at start with ``p2pkube join --set SECTION.FIELD=VALUE`` (repeatable), e.g.
``--set swim.probe_interval=0.2``; docs/settings.md lists them all with their defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from p2pkube.api.kube.settings import KubeApiSettings
from p2pkube.blobs.settings import BlobSettings
from p2pkube.browser.settings import BrowserSettings
from p2pkube.dashboard.settings import DashboardSettings
from p2pkube.membership.settings import (
    LIVENESS_PROFILES,
    LIVENESS_PROFILES_DOC,
    MembershipSettings,
    SwimSettings,
)
from p2pkube.metrics.settings import MetricsSettings
from p2pkube.net.settings import RpcSettings, TransportSettings
from p2pkube.runtime.settings import KubeletSettings, RuntimeSettings
from p2pkube.sched.settings import EventSettings, SchedulerSettings
from p2pkube.services.settings import ServiceSettings
from p2pkube.state.settings import StateSettings

RPC_FRAMING_BYTES = 1024
"""Room for the msgpack framing around a chunk inside an rpc answer."""


@dataclass
class AgentSettings:
    transport: TransportSettings = field(default_factory=TransportSettings)
    membership: MembershipSettings = field(default_factory=MembershipSettings)
    swim: SwimSettings = field(default_factory=SwimSettings)
    """SWIM + Lifeguard: the core (`p2pkube.membership.swim`) and the agent's host of it."""
    state: StateSettings = field(default_factory=StateSettings)
    rpc: RpcSettings = field(default_factory=RpcSettings)
    blobs: BlobSettings = field(default_factory=BlobSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    kubelet: KubeletSettings = field(default_factory=KubeletSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    events: EventSettings = field(default_factory=EventSettings)
    services: ServiceSettings = field(default_factory=ServiceSettings)
    """Handler pods and the request path to them (issue 12)."""
    kubeapi: KubeApiSettings = field(default_factory=KubeApiSettings)
    """The Kubernetes API every native agent serves (docs/kubectl.md)."""
    browser: BrowserSettings = field(default_factory=BrowserSettings)
    """Browser nodes only (a native agent ignores them)."""
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    """Native agents only: the Prometheus endpoint (docs/metrics.md)."""
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    """The cluster dashboard's poll of the mesh (docs/dashboard.md)."""

    def check(self) -> None:
        """ValueError when settings contradict each other (after all overrides)."""
        blobs, rpc = self.blobs, self.rpc
        if not 0 < blobs.chunk_size <= blobs.max_chunk_size:
            raise ValueError(
                f"blobs.chunk_size ({blobs.chunk_size}) must be 1..blobs.max_chunk_size "
                f"({blobs.max_chunk_size})"
            )
        if blobs.max_chunk_size + RPC_FRAMING_BYTES > rpc.max_response_bytes:
            raise ValueError(
                f"blobs.max_chunk_size ({blobs.max_chunk_size}) must leave {RPC_FRAMING_BYTES} "
                f"bytes of room below rpc.max_response_bytes ({rpc.max_response_bytes})"
            )
        if blobs.window < 1:
            raise ValueError("blobs.window must be at least 1")
        if blobs.max_concurrent_fetches < 1:
            raise ValueError("blobs.max_concurrent_fetches must be at least 1")
        self.swim.check()
        self.runtime.check()
        self.kubelet.check()
        self.services.check()
        self.scheduler.check()
        self.browser.check()
        self.metrics.check()
        self.dashboard.check()

    def override(self, assignment: str) -> None:
        """Apply one ``section.field=value``; ValueError naming the setting when it is wrong."""
        path, sep, raw = assignment.partition("=")
        section_name, dot, field_name = path.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {assignment!r}: expected SECTION.FIELD=VALUE")
        section = getattr(self, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            sections = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"--set {path}: unknown section {section_name!r} (one of {sections})")
        hints = get_type_hints(type(section))
        if field_name not in hints:
            raise ValueError(f"--set {path}: {section_name} has no setting {field_name!r}")
        setattr(section, field_name, _convert(path, hints[field_name], raw.strip()))


def _convert(path: str, hint: Any, raw: str) -> Any:
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return raw.lower() in ("true", "1")
        if hint in (int, float, str):
            return hint(raw)
        if getattr(hint, "__origin__", None) is list:
            return [item.strip() for item in raw.split(",") if item.strip()]
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"--set {path}={raw}: {exc}") from None


def describe() -> list[tuple[str, str, str]]:
    """(setting, default, documentation) for every setting, read from the dataclass sources."""
    import ast
    import inspect
    import textwrap

    rows: list[tuple[str, str, str]] = []
    for section in dataclasses.fields(AgentSettings):
        cls = section.default_factory
        if not isinstance(cls, type):  # every section is built by its dataclass
            raise TypeError(f"settings section {section.name} has no dataclass default_factory")
        definition = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        if not isinstance(definition, ast.ClassDef):
            raise TypeError(f"settings section {section.name}: {cls.__name__} is not a class")
        body = definition.body
        docs: dict[str, str] = {}
        for node, following in zip(body, [*body[1:], None], strict=True):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                doc = ""
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                    doc = " ".join(str(following.value.value).split())
                docs[node.target.id] = doc
        instance = cls()
        for item in dataclasses.fields(instance):
            rows.append(
                (
                    f"{section.name}.{item.name}",
                    repr(getattr(instance, item.name)),
                    docs.get(item.name, ""),
                )
            )
    return rows


def render_markdown() -> str:
    """docs/settings.md: every setting, its default and why (``python -m p2pkube.settings``)."""
    import inspect

    lines = [
        "# Settings",
        "",
        "Every timing and limit of the agent, with its default. Override any of them at start with",
        "`p2pkube join --set SECTION.FIELD=VALUE` (repeatable). Generated from the settings",
        "dataclasses by `python -m p2pkube.settings > docs/settings.md`; a test keeps it current.",
        "",
        "## Liveness profiles",
        "",
        "`p2pkube join --liveness NAME` sets SWIM's timings together (`--set` still wins):",
        "",
        "| profile | settings |",
        "|---|---|",
        *(
            f"| `{name}` | {', '.join(f'`{s}`' for s in assignments) or 'the defaults below'} |"
            for name, assignments in LIVENESS_PROFILES.items()
        ),
        "",
        inspect.cleandoc(LIVENESS_PROFILES_DOC),
        "",
    ]
    section = ""
    for name, default, doc in describe():
        current = name.split(".", 1)[0]
        if current != section:
            section = current
            lines += ["", f"## {section}", "", "| setting | default | what and why |"]
            lines.append("|---|---|---|")
        lines.append(f"| `{name}` | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
