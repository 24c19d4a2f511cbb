"""The API objects users write, validated with pydantic, in the Kubernetes shape.

Why pydantic: it reports every error of a document at once with the path to the field, it fills
defaults, and its core ships a wheel for Pyodide too (the browser node validates the same way).
Models forbid unknown fields, so a typo (``restartpolicy``) is an error, not a silent no-op.

:func:`validate_object` is the entry point: it takes the object as parsed from YAML/JSON and
returns it normalised (defaults filled, ``apiVersion`` checked) or raises
:class:`ValidationFailed` listing every ``field.path: reason``.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from p2pkube.model.errors import ValidationFailed
from p2pkube.model.names import (
    dns_label_error,
    dns_subdomain_error,
    label_key_error,
    label_value_error,
)
from p2pkube.model.quantity import parse_quantity

API_GROUP_VERSION = "p2pkube.io/v1"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
RESOURCE_NAMES = ("cpu", "memory")


# -- field checks (each returns the value or raises ValueError with the reason) --------------------
def _check(problem: str | None, value: Any) -> Any:
    if problem:
        raise ValueError(problem)
    return value


def _dns_label(value: str) -> str:
    return _check(dns_label_error(value), value)


def _dns_subdomain(value: str) -> str:
    return _check(dns_subdomain_error(value), value)


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        _check(label_key_error(key) and f"key {key!r}: {label_key_error(key)}", key)
        _check(label_value_error(val) and f"value of {key!r}: {label_value_error(val)}", val)
    return value


def _annotation_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        _check(label_key_error(key) and f"key {key!r}: {label_key_error(key)}", key)
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value) or len(value) > 256:
        raise ValueError(
            "must consist of letters, digits, '_', '-' or '.', and must not start with a digit"
        )
    return value


def _quantity(value: str | int | float) -> str:
    parsed = parse_quantity(value)  # ValueError with the reason
    if parsed < 0:
        raise ValueError("must not be negative")
    return str(value)


def _resources(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(RESOURCE_NAMES))
    if unknown:
        raise ValueError(f"unsupported resource {unknown[0]!r} (supported: cpu, memory)")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if posixpath.normpath(value) != value.rstrip("/") and value != "/":
        raise ValueError("must be a normalised path (no '..', '.', or '//')")
    return value


def _image(value: str) -> str:
    if DIGEST.match(value):
        return value
    if value.startswith(("http://", "https://")):
        raise ValueError(
            "a URL: p2pkube apply -f downloads and publishes it (the API takes digests only)"
        )
    if value.endswith(".wasm"):
        raise ValueError(
            "a local .wasm path: publish it first (p2pkube publish FILE) or use p2pkube apply "
            "-f, which publishes it (the API takes digests only)"
        )
    raise ValueError("must be a module digest sha256:<64 hex digits>")


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsSubdomain = Annotated[str, AfterValidator(_dns_subdomain)]
Quantity = Annotated[str | int | float, AfterValidator(_quantity)]
ResourceList = Annotated[dict[str, Quantity], AfterValidator(_resources)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]


class Model(BaseModel):
    """camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class ObjectMeta(Model):
    name: DnsSubdomain
    namespace: DnsLabel | None = None
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(_annotation_keys)] = Field(
        default_factory=dict
    )
    # Set by the agent and its controllers; accepted (the agent keeps its own values) so
    # that `get -o yaml | apply -f -` works for every object.
    uid: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    generation: int | None = None
    owner_references: list[dict[str, Any]] | None = None


class EnvVar(Model):
    name: Annotated[str, AfterValidator(_env_name)]
    value: str = ""


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


class Container(Model):
    name: DnsLabel
    image: Annotated[str, AfterValidator(_image)]
    command: list[str] | None = None
    """argv[0] and any leading arguments; default ``[name]`` (a wasm module has one entry
    point, so this only sets what the module sees as its program name and first arguments)."""
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    stdin_data: str | None = Field(default=None, max_length=1024 * 1024)
    """p2pkube extension: text the module reads on stdin (Kubernetes attaches a terminal
    instead; a batch module reading its input from stdin is the common wasm case)."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)


class HostPathVolume(Model):
    path: AbsolutePath


class EmptyDirVolume(Model):
    pass


class Volume(Model):
    name: DnsLabel
    host_path: HostPathVolume | None = None
    empty_dir: EmptyDirVolume | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Volume:
        if (self.host_path is None) == (self.empty_dir is None):
            raise ValueError("exactly one of hostPath or emptyDir must be set")
        return self


class PodSpec(Model):
    containers: list[Container] = Field(min_length=1)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    node_name: DnsSubdomain | None = None
    node_selector: Annotated[dict[str, str], AfterValidator(_labels)] = Field(default_factory=dict)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    termination_grace_period_seconds: int = Field(default=30, ge=0)
    volumes: list[Volume] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> PodSpec:
        problems = _duplicates("containers", [c.name for c in self.containers])
        problems += _duplicates("volumes", [v.name for v in self.volumes])
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


class Pod(Model):
    api_version: Literal["p2pkube.io/v1"]
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec


class LabelSelector(Model):
    match_labels: Annotated[dict[str, str], AfterValidator(_labels)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels:
            raise ValueError("matchLabels: must select at least one label")
        return self


class TemplateMeta(Model):
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(_annotation_keys)] = Field(
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
    api_version: Literal["p2pkube.io/v1"]
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpec


class ReplicaSet(Model):
    api_version: Literal["p2pkube.io/v1"]
    kind: Literal["ReplicaSet"]
    metadata: ObjectMeta
    spec: ReplicaSetSpec


class Job(Model):
    api_version: Literal["p2pkube.io/v1"]
    kind: Literal["Job"]
    metadata: ObjectMeta
    spec: JobSpec


class DaemonSet(Model):
    api_version: Literal["p2pkube.io/v1"]
    kind: Literal["DaemonSet"]
    metadata: ObjectMeta
    spec: DaemonSetSpec


class ConfigMap(Model):
    api_version: Literal["v1"]
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys(self) -> ConfigMap:
        bad = [k for k in self.data if not re.fullmatch(r"[-._a-zA-Z0-9]+", k) or len(k) > 253]
        if bad:
            raise ValueError(f"data: invalid key {bad[0]!r} (letters, digits, '-', '_', '.')")
        return self


MODELS: dict[str, type[Model]] = {
    "Pod": Pod,
    "Deployment": Deployment,
    "ReplicaSet": ReplicaSet,
    "Job": Job,
    "DaemonSet": DaemonSet,
    "ConfigMap": ConfigMap,
}
"""The kinds a user may write, by kind."""


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("function-after", "function-before")) or part in (
            "str",
            "int",
            "float",
        ):
            continue  # pydantic's names for validator layers, not fields
        else:
            text += f".{part}" if text else part
    return text


def _messages(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        path = _path(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "literal_error" and path in ("apiVersion", "kind"):
            message = f"must be {item['ctx']['expected']}"
        for part in message.split("\n"):
            # cross-field errors name their own sub-path ("containers[1].name: ...")
            sub, sep, reason = part.partition(": ")
            if sep and re.fullmatch(r"[A-Za-z][\w.\[\]]*", sub) and (" " not in sub):
                problems.append(f"{path}.{sub}: {reason}" if path else f"{sub}: {reason}")
            else:
                problems.append(f"{path}: {part}" if path else part)
    return problems


def validate_object(obj: Any) -> dict[str, Any]:
    """The object normalised (defaults filled), or ValidationFailed with every problem."""
    if not isinstance(obj, dict):
        raise ValidationFailed(["an object must be a mapping"])
    kind = obj.get("kind")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValidationFailed([f"kind: {kind!r} is not supported (supported: {sorted(MODELS)})"])
    try:
        parsed = model.model_validate(obj)
    except ValidationError as exc:
        raise ValidationFailed(_messages(exc)) from None
    return parsed.model_dump(by_alias=True, exclude_none=True)
