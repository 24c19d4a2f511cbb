"""The API objects users write, validated with pydantic, in the Kubernetes shape.

Why pydantic: it reports every error of a document at once with the path to the field, it fills
defaults, and its core ships a wheel for Pyodide too (the browser node validates the same way).
Models forbid unknown fields, so a typo (``restartpolicy``) is an error, not a silent no-op.

:func:`validate_object` is the entry point: it takes the object as parsed from YAML/JSON and
returns it normalised (defaults filled, ``apiVersion`` checked) or raises
:class:`ValidationFailed` listing every ``field.path: reason``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    model_validator,
)

from p2pkube.model.apiversions import accepted_api_versions, api_version_of
from p2pkube.model.cron import ScheduleError, schedule_error
from p2pkube.model.cron import zone as cron_zone
from p2pkube.model.errors import ValidationFailed
from p2pkube.model.fields import (
    AbsolutePath,
    DnsLabel,
    DnsSubdomain,
    Model,
    RelativePath,
    ResourceList,
    annotation_map,
    check,
    env_name,
    header_name,
    http_only,
    label_map,
    module_image,
    port_name,
    port_ref,
    probe_path,
    tcp_only,
)
from p2pkube.model.k8sschema import Path, defines
from p2pkube.model.names import label_key_error, label_value_error
from p2pkube.model.quantity import parse_quantity
from p2pkube.model.timestamps import parse_datetime


class ObjectMeta(Model):
    name: DnsSubdomain
    namespace: DnsLabel | None = None
    labels: Annotated[dict[str, str], AfterValidator(label_map)] = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(annotation_map)] = Field(
        default_factory=dict
    )
    # Set by the agent and its controllers; accepted (the agent keeps its own values) so
    # that `get -o yaml | apply -f -` works for every object.
    uid: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    generation: int | None = None
    owner_references: list[dict[str, Any]] | None = None


_FIELD_PATHS = ("metadata.name", "metadata.namespace", "spec.nodeName")
_FIELD_PATH_MAPS = re.compile(r"metadata\.(labels|annotations)\['([^'\]]+)'\]")


def field_path(value: str) -> str:
    """A Downward API ``fieldRef.fieldPath`` p2pkube fills in."""
    if value in _FIELD_PATHS or _FIELD_PATH_MAPS.fullmatch(value):
        return value
    raise ValueError(
        "must be " + ", ".join(_FIELD_PATHS) + ", metadata.labels['KEY'] or "
        "metadata.annotations['KEY'] (the fields p2pkube fills in)"
    )


class ConfigMapKeySelector(Model):
    name: DnsSubdomain
    key: str = Field(min_length=1, max_length=253)
    optional: bool = False


class SecretKeySelector(Model):
    name: DnsSubdomain
    key: str = Field(min_length=1, max_length=253)
    optional: bool = False


class ObjectFieldSelector(Model):
    field_path: Annotated[str, AfterValidator(field_path)]
    api_version: Literal["v1"] | None = None


class EnvVarSource(Model):
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None
    field_ref: ObjectFieldSelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        sources = (self.config_map_key_ref, self.secret_key_ref, self.field_ref)
        if sum(source is not None for source in sources) != 1:
            raise ValueError("exactly one of configMapKeyRef, secretKeyRef, fieldRef must be set")
        return self


class EnvVar(Model):
    name: Annotated[str, AfterValidator(env_name)]
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("value and valueFrom are exclusive")
        return self


class ConfigMapEnvSource(Model):
    name: DnsSubdomain
    optional: bool = False


class SecretEnvSource(Model):
    name: DnsSubdomain
    optional: bool = False


class EnvFromSource(Model):
    """Every key of a ConfigMap or a Secret as an environment variable (``prefix`` + key)."""

    prefix: str = ""
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: SecretEnvSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("exactly one of configMapRef, secretRef must be set")
        return self


class ResourceRequirements(Model):
    requests: ResourceList = Field(default_factory=dict)
    limits: ResourceList = Field(default_factory=dict)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        for name, limit in self.limits.items():
            request = self.requests.get(name)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"requests.{name} must be less than or equal to limits.{name}")
        return self


class VolumeMount(Model):
    name: DnsLabel
    mount_path: AbsolutePath
    read_only: bool = True
    """Read-only unless the manifest says otherwise (Kubernetes defaults to read-write; a wasm
    module gets nothing of the host it was not explicitly granted)."""


class ContainerPort(Model):
    """A port a handler container answers HTTP on (issue 12): a wasm module cannot listen,
    so the port names what requests are for (a Service's targetPort), nothing is bound."""

    container_port: int = Field(ge=1, le=65535)
    name: Annotated[str, AfterValidator(port_name)] | None = None
    protocol: Annotated[str, AfterValidator(tcp_only)] = "TCP"


class HttpHeader(Model):
    name: Annotated[str, AfterValidator(header_name)]
    value: str = ""


class HttpGetAction(Model):
    path: Annotated[str, AfterValidator(probe_path)] = "/"
    port: Annotated[int | str, AfterValidator(port_ref)]
    http_headers: list[HttpHeader] = Field(default_factory=list)
    scheme: Annotated[str, AfterValidator(http_only)] = "HTTP"


class Probe(Model):
    """Kubernetes' Probe, httpGet only: a handler pod answers HTTP and nothing else.

    ``periodSeconds`` and ``timeoutSeconds`` stay unset unless written: the kubelet then uses
    ``services.probe_period`` and ``services.probe_timeout`` (Kubernetes' 10 s and 1 s by
    default), so an operator's setting applies to every probe that did not choose."""

    http_get: HttpGetAction | None = None
    exec: Any = None
    tcp_socket: Any = None
    grpc: Any = None
    initial_delay_seconds: int = Field(default=0, ge=0)
    period_seconds: int | None = Field(default=None, ge=1)
    timeout_seconds: int | None = Field(default=None, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _http_get_only(self) -> Probe:
        problems = [
            f"{name}: not supported: a handler pod is probed over HTTP only (httpGet); a "
            f"wasm module {why}"
            for name, value, why in (
                ("exec", self.exec, "has no shell to run a command in"),
                ("tcpSocket", self.tcp_socket, "opens no socket a TCP probe could connect to"),
                ("grpc", self.grpc, "answers HTTP/1.1 requests as CGI, not gRPC"),
            )
            if value is not None
        ]
        if not problems and self.http_get is None:
            problems.append("httpGet: Required value: the probe must say what to GET")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Container(Model):
    name: DnsLabel
    image: Annotated[str, AfterValidator(module_image)]
    command: list[str] | None = None
    """argv[0] and any leading arguments; default ``[name]`` (a wasm module has one entry
    point, so this only sets what the module sees as its program name and first arguments)."""
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    env_from: list[EnvFromSource] = Field(default_factory=list)
    stdin_data: str | None = Field(default=None, max_length=1024 * 1024)
    """p2pkube extension: text the module reads on stdin (Kubernetes attaches a terminal
    instead; a batch module reading its input from stdin is the common wasm case)."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    ports: list[ContainerPort] | None = None
    """Declaring one makes the container an HTTP handler (issue 12): one instance of its
    module runs per request, as a CGI script."""
    readiness_probe: Probe | None = None

    @model_validator(mode="after")
    def _probe_port(self) -> Container:
        probe = self.readiness_probe
        if probe is None or probe.http_get is None:
            return self
        port = probe.http_get.port
        ports = self.ports or []
        if not ports:
            raise ValueError(
                "readinessProbe: a container without ports answers no HTTP request to probe "
                "(declare ports: [{containerPort: N}])"
            )
        names = {p.name for p in ports if p.name}
        numbers = {p.container_port for p in ports}
        if isinstance(port, str) and port not in names:
            raise ValueError(f"readinessProbe.httpGet.port: no port named {port!r} in ports")
        if isinstance(port, int) and port not in numbers:
            raise ValueError(
                f"readinessProbe.httpGet.port: {port} is not one of the container's ports "
                f"({', '.join(str(n) for n in sorted(numbers))})"
            )
        return self


class HostPathVolume(Model):
    path: AbsolutePath


class EmptyDirVolume(Model):
    pass


class KeyToPath(Model):
    key: str = Field(min_length=1, max_length=253)
    path: RelativePath
    mode: int | None = Field(default=None, ge=0, le=0o777)
    """Accepted as in Kubernetes; WASI preview 1 has no file modes, so it changes nothing."""


class ConfigMapVolume(Model):
    """A ConfigMap's keys as files (Kubernetes' ``configMap`` volume): every key, or
    ``items`` only; always read-only; kept up to date while the pod runs."""

    name: DnsSubdomain
    items: list[KeyToPath] | None = None
    optional: bool = False
    """A missing ConfigMap (or key) leaves an empty directory instead of holding the pod."""
    default_mode: int | None = Field(default=None, ge=0, le=0o777)
    """Accepted as in Kubernetes; WASI preview 1 has no file modes."""


class SecretVolume(Model):
    """A Secret's keys as files (Kubernetes' ``secret`` volume), like a configMap volume;
    projected into memory (``kubelet.secret_volume_dir``), never into the data dir."""

    secret_name: DnsSubdomain
    items: list[KeyToPath] | None = None
    optional: bool = False
    default_mode: int | None = Field(default=None, ge=0, le=0o777)
    """Accepted as in Kubernetes; WASI preview 1 has no file modes."""


_VOLUME_SOURCES = ("hostPath", "emptyDir", "configMap", "secret")


class Volume(Model):
    name: DnsLabel
    host_path: HostPathVolume | None = None
    empty_dir: EmptyDirVolume | None = None
    config_map: ConfigMapVolume | None = None
    secret: SecretVolume | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Volume:
        sources = [self.host_path, self.empty_dir, self.config_map, self.secret]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(f"exactly one of {', '.join(_VOLUME_SOURCES)} must be set")
        return self


_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_SUPPORTED_EFFECTS = ", ".join(f'"{e}"' for e in _TAINT_EFFECTS)


def _qualified_key(value: str) -> str:
    return check(label_key_error(value), value)


def _label_value(value: str) -> str:
    return check(label_value_error(value), value)


def _rfc3339(value: str) -> str:
    return check(None if parse_datetime(value) else "must be an RFC 3339 time", value)


class Toleration(Model):
    """Kubernetes' Toleration: lets a pod go to (NoSchedule, PreferNoSchedule) or stay on
    (NoExecute, for ``tolerationSeconds`` or for good) a node with a matching taint;
    validated as Kubernetes' ``ValidateTolerations``."""

    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        problems = []
        key, operator = self.key or "", self.operator or ""
        value, effect = self.value or "", self.effect or ""
        if key and (problem := label_key_error(key)):
            problems.append(f"key: Invalid value: {key!r}: {problem}")
        if not key and operator != "Exists":
            problems.append(
                f"operator: Invalid value: {operator!r}: operator must be Exists when "
                '`key` is empty, which means "match all values and all keys"'
            )
        if self.toleration_seconds is not None and effect != "NoExecute":
            problems.append(
                f"effect: Invalid value: {effect!r}: effect must be 'NoExecute' when "
                "`tolerationSeconds` is set"
            )
        if operator in ("", "Equal"):
            if problem := label_value_error(value):
                problems.append(f"value: Invalid value: {value!r}: {problem}")
        elif operator == "Exists":
            if value:
                problems.append(
                    f"value: Invalid value: {value!r}: value must be empty when "
                    "`operator` is 'Exists'"
                )
        else:
            problems.append(
                f'operator: Unsupported value: {operator!r}: supported values: "Equal", "Exists"'
            )
        if effect and effect not in _TAINT_EFFECTS:
            problems.append(
                f"effect: Unsupported value: {effect!r}: supported values: {_SUPPORTED_EFFECTS}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Taint(Model):
    """Kubernetes' Taint on a Node's spec; ``timeAdded`` is set by the API for NoExecute
    taints written without one (NoExecute's ``tolerationSeconds`` count from it)."""

    key: Annotated[str, AfterValidator(_qualified_key)]
    value: Annotated[str, AfterValidator(_label_value)] | None = None
    effect: str
    time_added: Annotated[str, AfterValidator(_rfc3339)] | None = None

    @model_validator(mode="after")
    def _effect(self) -> Taint:
        if self.effect not in _TAINT_EFFECTS:
            raise ValueError(
                f"effect: Unsupported value: {self.effect!r}: supported values: "
                f"{_SUPPORTED_EFFECTS}"
            )
        return self


class PodSpec(Model):
    containers: list[Container] = Field(min_length=1)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    node_name: DnsSubdomain | None = None
    node_selector: Annotated[dict[str, str], AfterValidator(label_map)] = Field(
        default_factory=dict
    )
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    termination_grace_period_seconds: int = Field(default=30, ge=0)
    volumes: list[Volume] = Field(default_factory=list)
    tolerations: list[Toleration] | None = None

    @model_validator(mode="after")
    def _references(self) -> PodSpec:
        problems = _duplicates("containers", [c.name for c in self.containers])
        problems += _duplicates("volumes", [v.name for v in self.volumes])
        problems += _port_duplicates(self.containers)
        volumes = {v.name for v in self.volumes}
        for i, container in enumerate(self.containers):
            for j, mount in enumerate(container.volume_mounts):
                if mount.name not in volumes:
                    problems.append(
                        f"containers[{i}].volumeMounts[{j}].name: no volume named {mount.name!r}"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _duplicates(field: str, names: list[str]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append(f"{field}[{i}].name: duplicate name {name!r}")
        seen.add(name)
    return problems


def _port_duplicates(containers: list[Container]) -> list[str]:
    """containerPort numbers and port names are unique within a pod, so that a Service's
    targetPort (number or name) names one handler of each pod."""
    numbers: set[int] = set()
    names: set[str] = set()
    problems = []
    for i, container in enumerate(containers):
        for j, port in enumerate(container.ports or []):
            path = f"containers[{i}].ports[{j}]"
            if port.container_port in numbers:
                problems.append(f"{path}.containerPort: Duplicate value: {port.container_port}")
            if port.name is not None and port.name in names:
                problems.append(f"{path}.name: Duplicate value: {port.name!r}")
            numbers.add(port.container_port)
            if port.name is not None:
                names.add(port.name)
    return problems


class Pod(Model):
    api_version: str
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec


class LabelSelector(Model):
    match_labels: Annotated[dict[str, str], AfterValidator(label_map)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels:
            raise ValueError("matchLabels: must select at least one label")
        return self


class TemplateMeta(Model):
    labels: Annotated[dict[str, str], AfterValidator(label_map)] = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(annotation_map)] = Field(
        default_factory=dict
    )


class PodTemplate(Model):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec


def _int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not re.fullmatch(r"(100|[1-9]?[0-9])%", value):
        raise ValueError("must be a count or a percentage like 25%")
    return value


IntOrPercent = Annotated[int | str, AfterValidator(_int_or_percent)]


class RollingUpdate(Model):
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"

    @model_validator(mode="after")
    def _not_both_zero(self) -> RollingUpdate:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise ValueError("maxSurge and maxUnavailable may not both be 0")
        return self


class DeploymentStrategy(Model):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdate | None = None

    @model_validator(mode="after")
    def _defaults(self) -> DeploymentStrategy:
        if self.type == "RollingUpdate" and self.rolling_update is None:
            object.__setattr__(self, "rolling_update", RollingUpdate())
        if self.type == "Recreate" and self.rolling_update is not None:
            raise ValueError("rollingUpdate: may not be set when type is Recreate")
        return self


def _selects_template(selector: LabelSelector, template: PodTemplate) -> list[str]:
    labels = template.metadata.labels
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return ["template.metadata.labels: must match selector.matchLabels"]
    return []


class DeploymentSpec(Model):
    replicas: int = Field(default=1, ge=0, le=10_000)
    selector: LabelSelector
    template: PodTemplate
    strategy: DeploymentStrategy = Field(default_factory=DeploymentStrategy)
    revision_history_limit: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        problems = _selects_template(self.selector, self.template)
        if self.template.spec.restart_policy != "Always":
            problems.append("template.spec.restartPolicy: must be Always for a Deployment")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class ReplicaSetSpec(Model):
    replicas: int = Field(default=1, ge=0, le=10_000)
    selector: LabelSelector
    template: PodTemplate

    @model_validator(mode="after")
    def _consistent(self) -> ReplicaSetSpec:
        problems = _selects_template(self.selector, self.template)
        if problems:
            raise ValueError("\n".join(problems))
        return self


class JobSpec(Model):
    completions: int = Field(default=1, ge=1, le=10_000)
    parallelism: int = Field(default=1, ge=1, le=10_000)
    backoff_limit: int = Field(default=6, ge=0)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    template: PodTemplate

    @model_validator(mode="after")
    def _restart_policy(self) -> JobSpec:
        if self.template.spec.restart_policy == "Always":
            raise ValueError(
                "template.spec.restartPolicy: must be OnFailure or Never for a Job "
                "(a Job's pods end)"
            )
        return self


class DaemonSetUpdateStrategy(Model):
    type: Literal["RollingUpdate", "OnDelete"] = "RollingUpdate"


class DaemonSetSpec(Model):
    selector: LabelSelector
    template: PodTemplate
    update_strategy: DaemonSetUpdateStrategy = Field(default_factory=DaemonSetUpdateStrategy)

    @model_validator(mode="after")
    def _consistent(self) -> DaemonSetSpec:
        problems = _selects_template(self.selector, self.template)
        if self.template.spec.restart_policy != "Always":
            problems.append("template.spec.restartPolicy: must be Always for a DaemonSet")
        if self.template.spec.node_name is not None:
            problems.append("template.spec.nodeName: a DaemonSet places one pod per node itself")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Deployment(Model):
    api_version: str
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpec


class ReplicaSet(Model):
    api_version: str
    kind: Literal["ReplicaSet"]
    metadata: ObjectMeta
    spec: ReplicaSetSpec


class Job(Model):
    api_version: str
    kind: Literal["Job"]
    metadata: ObjectMeta
    spec: JobSpec


class DaemonSet(Model):
    api_version: str
    kind: Literal["DaemonSet"]
    metadata: ObjectMeta
    spec: DaemonSetSpec


def _config_keys(field: str, keys: Iterable[str]) -> list[str]:
    """Kubernetes' rule for ConfigMap and Secret keys (they become file names)."""
    return [
        f"{field}: invalid key {key!r} (letters, digits, '-', '_', '.')"
        for key in keys
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or len(key) > 253 or key in (".", "..")
    ][:1]


class JobTemplate(Model):
    """A CronJob's ``jobTemplate``: the labels and annotations of the Jobs it creates, and
    their spec."""

    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: JobSpec


def _cron_schedule(value: str) -> str:
    problem = schedule_error(value)
    if problem is not None:
        raise ValueError(f'Invalid value: "{value}": {problem}')
    return value


def _time_zone(value: str) -> str:
    try:
        cron_zone(value)
    except ScheduleError as exc:
        raise ValueError(f'Invalid value: "{value}": {exc}') from None
    return value


class CronJobSpec(Model):
    schedule: Annotated[str, AfterValidator(_cron_schedule)]
    """Five cron fields or a macro (``@hourly``...), read in ``timeZone`` (UTC if unset)."""
    time_zone: Annotated[str, AfterValidator(_time_zone)] | None = None
    starting_deadline_seconds: int | None = Field(default=None, ge=0)
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    suspend: bool = False
    job_template: JobTemplate
    successful_jobs_history_limit: int = Field(default=3, ge=0)
    failed_jobs_history_limit: int = Field(default=1, ge=0)


class CronJob(Model):
    """Kubernetes' CronJob (batch/v1): Jobs made from ``jobTemplate`` on a cron schedule."""

    api_version: Literal["batch/v1", "p2pkube.io/v1"]
    kind: Literal["CronJob"]
    metadata: ObjectMeta
    spec: CronJobSpec

    @model_validator(mode="after")
    def _name_leaves_room(self) -> CronJob:
        # Its Jobs are named <name>-<minutes since the epoch> (11 more characters).
        if len(self.metadata.name) > 52:
            raise ValueError("metadata.name: must be no more than 52 characters")
        return self


class ConfigMap(Model):
    api_version: str
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys(self) -> ConfigMap:
        problems = _config_keys("data", self.data)
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Secret(Model):
    """Kubernetes' Secret: ``data`` in base64, ``stringData`` as text (written into ``data``
    and never stored, as in Kubernetes). Its values are sealed in the replicated state
    (:mod:`p2pkube.model.secrets`); errors never quote them."""

    api_version: str
    kind: Literal["Secret"]
    metadata: ObjectMeta
    type: str = Field(default="Opaque", min_length=1, max_length=253)
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict, exclude=True)
    """Folded into ``data`` by validation; never stored."""

    @model_validator(mode="after")
    def _keys_and_values(self) -> Secret:
        problems = _config_keys("data", self.data) + _config_keys("stringData", self.string_data)
        for key, value in self.data.items():
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                problems.append(f"data[{key}]: must be base64 (use stringData for plain text)")
        if problems:
            raise ValueError("\n".join(problems))
        data = dict(self.data)
        for key, text in self.string_data.items():  # stringData wins, as in Kubernetes
            data[key] = base64.b64encode(text.encode()).decode()
        object.__setattr__(self, "data", data)
        return self


class NamespaceSpec(Model):
    finalizers: list[str] = Field(default_factory=list)


class NamespaceMeta(ObjectMeta):
    name: DnsLabel  # a namespace's name is a DNS label (it is part of other names)


class Namespace(Model):
    """A namespace (cluster-scoped: a ``metadata.namespace`` is ignored, as in Kubernetes):
    objects are created only in one that exists; deleting it deletes them
    (:class:`p2pkube.model.objects.ObjectService`)."""

    api_version: str
    kind: Literal["Namespace"]
    metadata: NamespaceMeta
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)


_UNSUPPORTED_SERVICE_TYPES = {
    "LoadBalancer": "p2pkube provisions no external load balancer; use NodePort, which every "
    "native node listens on",
    "ExternalName": "p2pkube has no cluster DNS to publish a CNAME in (pods cannot open sockets)",
}


def _service_type(value: str) -> str:
    if value in _UNSUPPORTED_SERVICE_TYPES:
        raise ValueError(f"{value!r} is not supported: {_UNSUPPORTED_SERVICE_TYPES[value]}")
    if value not in ("ClusterIP", "NodePort"):
        raise ValueError(f"{value!r} is not a Service type (supported: ClusterIP, NodePort)")
    return value


class ServicePort(Model):
    name: DnsLabel | None = None
    protocol: Annotated[str, AfterValidator(tcp_only)] = "TCP"
    port: int = Field(ge=1, le=65535)
    target_port: Annotated[int | str, AfterValidator(port_ref)] | None = None
    """A containerPort number or name on each selected pod; defaults to ``port``."""
    node_port: int | None = Field(default=None, ge=1, le=65535)
    """Type NodePort only; allocated from ``services.node_port_range`` when unset, and the
    range and conflicts with other Services are checked when the object is written
    (``p2pkube.model.nodeports``), where the agent's setting is known."""

    @model_validator(mode="after")
    def _default_target(self) -> ServicePort:
        if self.target_port is None:
            object.__setattr__(self, "target_port", self.port)
        return self


class ServiceSpec(Model):
    selector: Annotated[dict[str, str], AfterValidator(label_map)] = Field(default_factory=dict)
    """Pods in the Service's namespace whose labels hold all of these are its endpoints (an
    empty selector selects none: p2pkube has no manually managed Endpoints)."""
    type: Annotated[str, AfterValidator(_service_type)] = "ClusterIP"
    ports: list[ServicePort] = Field(min_length=1)

    @model_validator(mode="after")
    def _ports(self) -> ServiceSpec:
        problems = []
        many = len(self.ports) > 1
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(self.ports):
            path = f"ports[{i}]"
            if many and port.name is None:
                problems.append(
                    f"{path}.name: Required value: a Service with several ports names each"
                )
            if port.name is not None and port.name in names:
                problems.append(f"{path}.name: Duplicate value: {port.name!r}")
            if port.port in numbers:
                problems.append(f"{path}.port: Duplicate value: {port.port}")
            if port.node_port is not None and self.type != "NodePort":
                problems.append(
                    f"{path}.nodePort: may only be set when type is NodePort (type is {self.type})"
                )
            names.add(port.name or "")
            numbers.add(port.port)
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Service(Model):
    """Kubernetes' Service (ClusterIP and NodePort)."""

    api_version: str
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec


class NodeSpec(Model):
    """What a user may write of a Node (``p2pkube cordon``, ``taint``, or ``apply`` of it):
    the rest of a Node is its agent's (labels it was started with, its status)."""

    unschedulable: bool = False
    taints: list[Taint] | None = None

    @model_validator(mode="after")
    def _unique(self) -> NodeSpec:
        seen: set[tuple[str, str]] = set()
        problems = []
        for i, taint in enumerate(self.taints or []):
            if (taint.key, taint.effect) in seen:
                problems.append(
                    f"taints[{i}]: Duplicate value: {taint.key!r}: taints must be unique by "
                    "key and effect pair"
                )
            seen.add((taint.key, taint.effect))
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Node(Model):
    """A Node as a user may write it: its spec and labels (the object service keeps its
    agent's uid, annotations and status, and creates no Node: agents do)."""

    api_version: Literal["v1"]
    kind: Literal["Node"]
    metadata: ObjectMeta
    """(A ``namespace`` is dropped when it is stored, as Kubernetes drops it from a
    cluster-scoped object: ``apply -n`` gives every document one.)"""
    spec: NodeSpec = Field(default_factory=NodeSpec)


READ_ONLY_KINDS = {
    "Endpoints": "Endpoints are computed by every node from the Services and the pods "
    "(p2pkube get endpoints shows them); they cannot be written",
}
"""Kinds the API shows but nobody writes, with why."""


MODELS: dict[str, type[Model]] = {
    "Pod": Pod,
    "Deployment": Deployment,
    "ReplicaSet": ReplicaSet,
    "Job": Job,
    "CronJob": CronJob,
    "DaemonSet": DaemonSet,
    "ConfigMap": ConfigMap,
    "Secret": Secret,
    "Service": Service,
    "Namespace": Namespace,
    "Node": Node,
}
"""The kinds a user may write, by kind."""


_VALIDATOR_LAYERS = ("str", "int", "float")


def _fields(loc: tuple[int | str, ...]) -> Path:
    """A pydantic error location as the document's path (its validator layers left out)."""
    return tuple(
        part
        for part in loc
        if isinstance(part, int)
        or not (part.startswith(("function-after", "function-before")) or part in _VALIDATOR_LAYERS)
    )


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in _fields(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _messages(errors: list[Any]) -> list[str]:
    problems = []
    for item in errors:
        path = _path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "literal_error" and path == "kind":
            message = f"must be {item['ctx']['expected']}"
        for part in message.split("\n"):
            # cross-field errors name their own sub-path ("containers[1].name: ...")
            sub, sep, reason = part.partition(": ")
            if sep and re.fullmatch(r"[A-Za-z][\w.\[\]]*", sub) and (" " not in sub):
                problems.append(f"{path}.{sub}: {reason}" if path else f"{sub}: {reason}")
            else:
                problems.append(f"{path}: {part}" if path else part)
    return problems


_WHY_IGNORED = {
    "imagePullPolicy": "a module is a content-addressed blob that nodes fetch from each other",
    "securityContext": "a wasm module has no Linux user, capabilities or privileges to set",
    "livenessProbe": "not implemented (readinessProbe is)",
    "startupProbe": "not implemented (readinessProbe is)",
    "resourceVersion": "p2pkube has no optimistic concurrency on writes yet",
}
"""Why p2pkube ignores some fields people often write, shown in their warning. Which fields
are ignored rather than rejected comes from Kubernetes' schemas (``k8sschema``), not from
this table."""


def _ignored_warning(path: Path) -> str:
    name = next((part for part in reversed(path) if isinstance(part, str)), "")
    why = _WHY_IGNORED.get(name, "p2pkube does not implement this Kubernetes field")
    return f"{_path(path)}: ignored: {why}"


def _without(document: dict[str, Any], paths: list[Path]) -> dict[str, Any]:
    """A copy of ``document`` without the fields at ``paths``."""
    copy = deepcopy(document)
    for path in paths:
        parent: Any = copy
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
    return copy


def validate_object(obj: Any, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The object normalised (defaults filled, Kubernetes' apiVersion), or ValidationFailed
    with every problem.

    A field Kubernetes defines that p2pkube does not implement is dropped and ``warn`` hears
    why (``path: ignored: reason``), as a Kubernetes API server warns of fields it does not
    know; a field Kubernetes does not define either is an error."""
    if not isinstance(obj, dict):
        raise ValidationFailed(["an object must be a mapping"])
    kind = obj.get("kind")
    if isinstance(kind, str) and kind in READ_ONLY_KINDS:
        raise ValidationFailed([f"kind: {READ_ONLY_KINDS[kind]}"])
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None or not isinstance(kind, str):
        raise ValidationFailed([f"kind: {kind!r} is not supported (supported: {sorted(MODELS)})"])
    accepted = accepted_api_versions(kind)
    if obj.get("apiVersion") not in accepted:
        wrote = obj.get("apiVersion")
        raise ValidationFailed(
            [f"apiVersion: must be {' or '.join(accepted)} for a {kind} (got {wrote!r})"]
        )
    document = {**obj, "apiVersion": api_version_of(kind)}
    try:
        parsed = model.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        ignored = [
            _fields(e["loc"])
            for e in errors
            if e["type"] == "extra_forbidden"
            and defines(document["apiVersion"], kind, _fields(e["loc"]))
        ]
        if not ignored:
            raise ValidationFailed(_messages(errors)) from None
        document = _without(document, ignored)
        try:
            parsed = model.model_validate(document)
        except ValidationError as again:
            raise ValidationFailed(_messages(again.errors(include_url=False))) from None
        for path in ignored:
            if warn is not None:
                warn(_ignored_warning(path))
    return parsed.model_dump(by_alias=True, exclude_none=True)
