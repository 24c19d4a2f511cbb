"""``describe pod``, and the parts of a pod every workload's description shows too: its
containers (with their states), its volumes, and the pod template."""

from __future__ import annotations

from typing import Any

from p2pkube.cli.describe_sections import (
    Lookup,
    bool_text,
    conditions,
    conditions_of,
    controlled_by,
    events,
    format_time,
    header,
    mapping,
)
from p2pkube.cli.output import format_age
from p2pkube.cli.tabwriter import Writer
from p2pkube.model.taints import pod_tolerations
from p2pkube.services.settings import ServiceSettings

_SERVICE_DEFAULTS = ServiceSettings()


def _state(w: Writer, title: str, state: Any) -> None:
    state = state if isinstance(state, dict) else {}
    if isinstance(state.get("running"), dict):
        w.line(2, f"{title}:", "Running")
        w.line(3, "Started:", format_time(state["running"].get("startedAt")))
    elif isinstance(state.get("terminated"), dict):
        ended = state["terminated"]
        w.line(2, f"{title}:", "Terminated")
        if ended.get("reason"):
            w.line(3, "Reason:", ended["reason"])
        if ended.get("message"):
            w.line(3, "Message:", ended["message"])
        w.line(3, "Exit Code:", ended.get("exitCode", "<unknown>"))
        w.line(3, "Started:", format_time(ended.get("startedAt")))
        w.line(3, "Finished:", format_time(ended.get("finishedAt")))
    else:
        waiting = state.get("waiting") if isinstance(state.get("waiting"), dict) else {}
        w.line(2, f"{title}:", "Waiting")
        if waiting.get("reason"):
            w.line(3, "Reason:", waiting["reason"])
        if waiting.get("message"):
            w.line(3, "Message:", waiting["message"])


def _ports(container: dict[str, Any]) -> str:
    """kubectl's ``8080/TCP, 9090/TCP`` (``<none>`` for a container that serves nothing)."""
    ports = [
        f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}"
        for p in container.get("ports") or []
        if isinstance(p, dict)
    ]
    return ", ".join(ports) or "<none>"


def env_text(var: dict[str, Any]) -> str:
    """One variable as kubectl describe shows it: its value, or where it comes from."""
    source = var.get("valueFrom")
    if not isinstance(source, dict):
        return str(var.get("value", ""))
    for field_name, what in (("configMapKeyRef", "of config map"), ("secretKeyRef", "in secret")):
        ref = source.get(field_name)
        if isinstance(ref, dict):
            optional = "true" if ref.get("optional") else "false"
            where = f"<set to the key '{ref.get('key')}' {what} '{ref.get('name')}'>"
            return f"{where}  Optional: {optional}"
    field = source.get("fieldRef") or {}
    return f"({field.get('apiVersion', 'v1')}:{field.get('fieldPath')})"


def probe_text(probe: dict[str, Any]) -> str:
    """kubectl's probe line: ``http-get http://:8080/healthz delay=0s timeout=1s period=10s
    #success=1 #failure=3``; an unset period or timeout shows the agent's default
    (``services.probe_period``, ``services.probe_timeout``) as shipped."""
    get = probe.get("httpGet")
    get = get if isinstance(get, dict) else {}
    target = f"http-get http://:{get.get('port', '')}{get.get('path') or '/'}"
    period = probe.get("periodSeconds") or _SERVICE_DEFAULTS.probe_period
    timeout = probe.get("timeoutSeconds") or _SERVICE_DEFAULTS.probe_timeout
    return (
        f"{target} delay={probe.get('initialDelaySeconds', 0)}s timeout={timeout:g}s "
        f"period={period:g}s #success={probe.get('successThreshold', 1)} "
        f"#failure={probe.get('failureThreshold', 3)}"
    )


def _containers(
    w: Writer,
    containers: Any,
    statuses: Any = None,
    *,
    space: str = "",
) -> None:
    """kubectl's describeContainers; ``space`` indents a pod template's ("  ")."""
    w.line(0, f"{space}Containers:")
    by_name = {s.get("name"): s for s in statuses or [] if isinstance(s, dict) and s.get("name")}
    for container in containers or []:
        if not isinstance(container, dict):
            continue
        name = container.get("name", "")
        w.line(1, f"{' ' if space else ''}{name}:")
        status = by_name.get(name)
        w.line(2, "Image:", container.get("image", "<none>"))
        if status is not None and status.get("imageID"):
            w.line(2, "Image ID:", status["imageID"])
        ports = _ports(container)
        w.line(2, "Ports:" if "," in ports else "Port:", ports)
        for title in ("command", "args"):
            values = container.get(title)
            if values:
                w.line(2, f"{title.capitalize()}:")
                for value in values:
                    for part in str(value).split("\n"):
                        w.line(3, part)
        if container.get("stdinData"):
            w.line(2, "Stdin:", f"{len(str(container['stdinData']).encode())} bytes")
        if status is not None:
            _state(w, "State", status.get("state"))
            last = status.get("lastState")
            if isinstance(last, dict) and isinstance(last.get("terminated"), dict):
                _state(w, "Last State", last)
            w.line(2, "Ready:", bool_text(status.get("ready")))
            w.line(2, "Restart Count:", status.get("restartCount", 0))
        resources = container.get("resources") or {}
        for title in ("limits", "requests"):
            values = resources.get(title) or {}
            if values:
                w.line(2, f"{title.capitalize()}:")
                for key, value in sorted(values.items()):
                    w.line(3, f"{key}:", value)
        if isinstance(container.get("readinessProbe"), dict):
            w.line(2, "Readiness:", probe_text(container["readinessProbe"]))
        env = [e for e in container.get("env") or [] if isinstance(e, dict)]
        env_from = [e for e in container.get("envFrom") or [] if isinstance(e, dict)]
        if env_from:
            w.line(2, "Environment Variables from:")
            for source in env_from:
                kind = "Secret" if "secretRef" in source else "ConfigMap"
                ref = source.get("secretRef") or source.get("configMapRef") or {}
                optional = "true" if ref.get("optional") else "false"
                w.line(3, f"{ref.get('name')}", f"{kind}  Optional: {optional}")
        if env:
            w.line(2, "Environment:")
            for var in env:
                w.line(3, f"{var.get('name')}:", env_text(var))
        else:
            w.line(2, "Environment:", "<none>")
        mounts = [m for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
        if mounts:
            w.line(2, "Mounts:")
            for mount in mounts:
                mode = "ro" if mount.get("readOnly", True) else "rw"
                w.line(3, f"{mount.get('mountPath')} from {mount.get('name')} ({mode})")
        else:
            w.line(2, "Mounts:", "<none>")


def _volumes(w: Writer, volumes: Any, space: str = "") -> None:
    volumes = [v for v in volumes or [] if isinstance(v, dict)]
    if not volumes:
        w.line(0, f"{space}Volumes:", "<none>")
        return
    w.line(0, f"{space}Volumes:")
    for volume in volumes:
        w.line(1, f"{' ' if space else ''}{volume.get('name')}:")
        if isinstance(volume.get("hostPath"), dict):
            w.line(2, "Type:", "HostPath (bare host directory volume)")
            w.line(2, "Path:", volume["hostPath"].get("path", ""))
        elif "emptyDir" in volume:
            w.line(2, "Type:", "EmptyDir (a temporary directory that shares a pod's lifetime)")
        elif isinstance(volume.get("configMap"), dict):
            w.line(2, "Type:", "ConfigMap (a volume populated by a ConfigMap)")
            w.line(2, "Name:", volume["configMap"].get("name", ""))
            w.line(2, "Optional:", "true" if volume["configMap"].get("optional") else "false")
        elif isinstance(volume.get("secret"), dict):
            w.line(2, "Type:", "Secret (a volume populated by a Secret)")
            w.line(2, "SecretName:", volume["secret"].get("secretName", ""))
            w.line(2, "Optional:", "true" if volume["secret"].get("optional") else "false")
        else:
            w.line(2, "Type:", "<unknown>")


def toleration_text(toleration: dict[str, Any]) -> str:
    """kubectl's way of writing a toleration: ``key=value:Effect``, `` op=Exists`` when it
    matches any value, `` for 300s`` with its ``tolerationSeconds``."""
    key, value = toleration.get("key") or "", toleration.get("value") or ""
    effect = toleration.get("effect") or ""
    text = key + (f"={value}" if value else "") + (f":{effect}" if effect else "")
    if toleration.get("operator") == "Exists" and not value:
        text += " op=Exists" if key or effect else "op=Exists"
    if toleration.get("tolerationSeconds") is not None:
        text += f" for {toleration['tolerationSeconds']}s"
    return text


def pod_template(w: Writer, template: Any) -> None:
    """kubectl's DescribePodTemplate."""
    w.line(0, "Pod Template:")
    if not isinstance(template, dict):
        w.line(1, "<unset>")
        return
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    mapping(w, "  Labels", meta.get("labels"))
    if meta.get("annotations"):
        mapping(w, "  Annotations", meta["annotations"], ": ")
    _containers(w, spec.get("containers"), space="  ")
    _volumes(w, spec.get("volumes"), space="  ")
    if spec.get("nodeSelector"):
        mapping(w, "  Node-Selectors", spec["nodeSelector"])


def describe_pod(pod: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's PodDescriber."""
    w = Writer()
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    status = pod.get("status") or {}
    started = status.get("startTime")
    header(
        w,
        pod,
        ("Node:", spec.get("nodeName") or "<none>"),
        ("Start Time:", format_time(started)) if started else None,
    )
    if meta.get("deletionTimestamp"):
        w.line(0, "Status:", f"Terminating (lasts {format_age(meta['deletionTimestamp'])})")
        w.line(0, "Termination Grace Period:", f"{spec.get('terminationGracePeriodSeconds', 30)}s")
    else:
        w.line(0, "Status:", status.get("phase") or "Pending")
    if status.get("reason"):
        w.line(0, "Reason:", status["reason"])
    if status.get("message"):
        w.line(0, "Message:", status["message"])
    controlled_by(w, pod)
    _containers(w, spec.get("containers"), status.get("containerStatuses"))
    detailed = any(c.get("reason") or c.get("message") for c in conditions_of(pod))
    fields = ("type", "status", "reason", "message") if detailed else ("type", "status")
    conditions(w, pod, fields, rule=False)
    _volumes(w, spec.get("volumes"))
    if spec.get("activeDeadlineSeconds"):
        w.line(0, "Active Deadline Seconds:", f"{spec['activeDeadlineSeconds']}s")
    w.line(0, "Restart Policy:", spec.get("restartPolicy", "Always"))
    mapping(w, "Node-Selectors", spec.get("nodeSelector"))
    shown = [toleration_text(t) for t in pod_tolerations(spec)]
    for i, text in enumerate(shown or ["<none>"]):
        w.line(0, "Tolerations:" if i == 0 else "", text)
    events(w, lookup.events(pod))
    return w.text()
