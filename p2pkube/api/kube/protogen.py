"""Writes ``protobuf_table.py``, the schema :mod:`p2pkube.api.kube.protobuf` decodes kubectl's
protobuf bodies with, from Kubernetes' own sources. Run it again when moving to a newer release.

kubectl's typed commands send Kubernetes protobuf, whose field numbers and types only Kubernetes'
``generated.proto`` files define; they are never typed by hand. The .proto files alone do not
give the JSON form, which Kubernetes' Go types decide, so the Go files of the same packages are
read too, for each field's:

- JSON name, and whether it is inlined (``json:",inline"``: ``VolumeSource`` in a ``Volume``,
  ``LocalObjectReference`` in a ``SecretKeySelector`` appear as the parent's own fields);
- Go pointer or not (a pointer's zero, ``replicas: 0``, is a value: go-to-protobuf writes a
  pointer only when set, a plain field always), and ``omitempty`` / ``omitzero``;
- whether the type has its own JSON form (a ``MarshalJSON`` method: Time, Quantity,
  IntOrString...), which the decoder converts instead of expanding field by field.

Only messages reachable from the kinds the API face serves (``resources.RESOURCES`` and their
subresource kinds), ``DeleteOptions`` and the ``runtime.Unknown`` envelope are written.

Regenerate (tags of kubernetes/api and kubernetes/apimachinery, which share version numbers;
v0.36.3 is Kubernetes v1.36.3)::

    mkdir -p /tmp/k8s/api /tmp/k8s/apimachinery
    git -C API_CLONE archive v0.36.3 | tar -x -C /tmp/k8s/api
    git -C APIMACHINERY_CLONE archive v0.36.3 | tar -x -C /tmp/k8s/apimachinery
    python -m p2pkube.api.kube.protogen --source "kubernetes/api v0.36.3 (...)" \\
        /tmp/k8s/api /tmp/k8s/apimachinery
    ruff format p2pkube/api/kube/protobuf_table.py

It lives in the package, beside the table it writes, because it needs the package's own table
of served resources to know which kinds to include.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from p2pkube.api.kube.resources import RESOURCES

TABLE_PATH = Path(__file__).with_name("protobuf_table.py")
SCALAR_TYPES = frozenset({"bool", "bytes", "int32", "int64", "string"})
"""The scalar types Kubernetes' .proto files use, and all the decoder knows."""
ENVELOPE = "runtime.Unknown"
ANY_GROUP_KINDS = {"DeleteOptions": "meta/v1.DeleteOptions"}
"""Kinds every group version registers (metav1.AddToGroupVersion): kubectl names them with
the group of the resource it deletes (``apps/v1``, ``v1``...)."""


class ProtoSourceError(Exception):
    """The .proto or Go sources are not as this generator expects."""


@dataclass
class ProtoField:
    number: int
    name: str
    type: str
    """A scalar type or a message's short name (``core/v1.PodSpec``); a map's value type."""
    repeated: bool = False
    map: bool = False


@dataclass
class GoField:
    number: int
    json_name: str
    pointer: bool
    omitempty: bool
    omitzero: bool
    inline: bool


@dataclass
class GoPackage:
    structs: dict[str, dict[int, GoField]] = field(default_factory=dict)
    custom_json: set[str] = field(default_factory=set)
    """Types with their own ``MarshalJSON``."""


# --- names -------------------------------------------------------------------------------


def short_package(package: str) -> str:
    """``k8s.io.api.core.v1`` -> ``core/v1``; ``k8s.io.apimachinery.pkg.apis.meta.v1`` ->
    ``meta/v1``; ``k8s.io.apimachinery.pkg.api.resource`` -> ``resource``."""
    parts = package.split(".")
    last_root = max(i for i, p in enumerate(parts) if p in ("api", "apis", "util", "pkg"))
    return "/".join(parts[last_root + 1 :])


def kind_package(api_version: str) -> str:
    """The short proto package of a served group version: ``apps/v1`` -> ``apps/v1``,
    ``v1`` -> ``core/v1``, ``networking.k8s.io/v1`` -> ``networking/v1``."""
    group, _, version = api_version.rpartition("/")
    return f"{group.split('.')[0] or 'core'}/{version}"


# --- .proto ------------------------------------------------------------------------------

_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;", re.M)
_MESSAGE = re.compile(r"^message\s+(\w+)\s*\{(.*?)^\}", re.M | re.S)
_FIELD = re.compile(
    r"^\s*(?:(optional|repeated|required)\s+([\w.]+)|map<\s*(\w+)\s*,\s*([\w.]+)\s*>)"
    r"\s+(\w+)\s*=\s*(\d+)\s*;",
    re.M,
)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def parse_proto(text: str) -> tuple[str, dict[str, list[ProtoField]]]:
    """(package, fields of each message) of one go-to-protobuf ``generated.proto``: flat
    proto2 messages, ``optional``/``repeated`` fields and ``map<string, T>``."""
    text = _COMMENT.sub("", text)
    package_match = _PACKAGE.search(text)
    if package_match is None:
        raise ProtoSourceError("no package statement")
    package = package_match.group(1)
    messages: dict[str, list[ProtoField]] = {}
    for message in _MESSAGE.finditer(text):
        name, body = message.group(1), message.group(2)
        if re.search(r"^\s*(message|enum|oneof)\b", body, re.M):
            raise ProtoSourceError(f"{package}.{name}: nested declarations are not supported")
        fields = []
        for match in _FIELD.finditer(body):
            label, scalar_or_message, key, value, field_name, number = match.groups()
            if key is not None and key != "string":
                raise ProtoSourceError(f"{package}.{name}.{field_name}: map key {key}")
            fields.append(
                ProtoField(
                    number=int(number),
                    name=field_name,
                    type=_resolve_type(value or scalar_or_message, package),
                    repeated=label == "repeated",
                    map=key is not None,
                )
            )
        declared = len(re.findall(r";", body))
        if declared != len(fields):
            raise ProtoSourceError(f"{package}.{name}: a field this parser does not read")
        messages[f"{short_package(package)}.{name}"] = fields
    return package, messages


def _resolve_type(type_name: str, package: str) -> str:
    if type_name in SCALAR_TYPES:
        return type_name
    if type_name.startswith("."):
        qualified_package, _, message = type_name[1:].rpartition(".")
        return f"{short_package(qualified_package)}.{message}"
    if "." in type_name or not type_name[:1].isupper():
        raise ProtoSourceError(f"{package}: unsupported type {type_name}")
    return f"{short_package(package)}.{type_name}"


# --- Go ----------------------------------------------------------------------------------

_STRUCT = re.compile(r"^type\s+(\w+)\s+struct\s*\{\s*$(.*?)^\}", re.M | re.S)
_TAG = re.compile(r'(\w+):"([^"]*)"')
_MARSHAL_JSON = re.compile(r"^func\s+\(\s*\w+\s+\*?(\w+)\s*\)\s+MarshalJSON\(", re.M)


def parse_go(texts: Iterable[str]) -> GoPackage:
    """The protobuf-tagged fields of every struct in a Go package's files, by field number,
    and its types with their own JSON form."""
    package = GoPackage()
    for text in texts:
        package.custom_json.update(_MARSHAL_JSON.findall(text))
        for struct in _STRUCT.finditer(text):
            package.structs[struct.group(1)] = dict(_go_fields(struct.group(2)))
    return package


def _go_fields(body: str) -> Iterator[tuple[int, GoField]]:
    for line in body.splitlines():
        declaration, tick, rest = line.partition("`")
        if not tick or declaration.strip().startswith("//"):
            continue
        tags = dict(_TAG.findall(rest.partition("`")[0]))
        protobuf = tags.get("protobuf", "-")
        if protobuf == "-":
            continue
        words = declaration.split()
        go_name, go_type = (words[-1].split(".")[-1], words[0]) if len(words) == 1 else words
        json_name, *options = tags.get("json", go_name).split(",")
        number = int(protobuf.split(",")[1])
        yield (
            number,
            GoField(
                number=number,
                json_name=json_name or go_name,
                pointer=go_type.startswith("*"),
                omitempty="omitempty" in options,
                omitzero="omitzero" in options,
                inline="inline" in options,
            ),
        )


# --- the table ---------------------------------------------------------------------------


@dataclass
class Sources:
    messages: dict[str, list[ProtoField]] = field(default_factory=dict)
    go: dict[str, GoPackage] = field(default_factory=dict)
    """By short proto package."""


def read_sources(roots: Iterable[Path]) -> Sources:
    """Every ``generated.proto`` under the roots, with the Go files beside it."""
    sources = Sources()
    for root in roots:
        for proto in sorted(root.rglob("generated.proto")):
            package, messages = parse_proto(proto.read_text())
            sources.messages.update(messages)
            go_files = (p.read_text() for p in proto.parent.glob("*.go") if _is_source(p))
            sources.go[short_package(package)] = parse_go(go_files)
    return sources


def _is_source(path: Path) -> bool:
    return not path.name.endswith("_test.go")


def served_kinds(sources: Sources) -> dict[str, str]:
    """``apiVersion/kind`` -> message, for every kind the API face serves that has one."""
    kinds: dict[str, str] = {}
    for resource in RESOURCES:
        pairs = [(resource.api_version, resource.kind)]
        pairs += [
            (f"{s.group}/{s.version}" if s.group else s.version, s.kind)
            for s in resource.subresources
            if s.kind != resource.kind
        ]
        for api_version, kind in pairs:
            message = f"{kind_package(api_version)}.{kind}"
            if message in sources.messages:
                kinds[f"{api_version}/{kind}"] = message
    kinds.update({f"*/{kind}": message for kind, message in ANY_GROUP_KINDS.items()})
    return dict(sorted(kinds.items()))


def _is_custom(message: str, sources: Sources) -> bool:
    package, _, name = message.rpartition(".")
    return name in sources.go[package].custom_json


def reachable(roots: Iterable[str], sources: Sources) -> list[str]:
    """The roots and every message their fields use, sorted (a custom-JSON type's too: the
    decoder reads its proto fields, the envelope's typeMeta)."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        message = pending.pop()
        if message in seen:
            continue
        if message not in sources.messages:
            raise ProtoSourceError(f"message {message} is not in the sources")
        seen.add(message)
        pending += [f.type for f in sources.messages[message] if f.type not in SCALAR_TYPES]
    return sorted(seen)


Row = tuple[int, str, str, str]


def message_rows(message: str, sources: Sources) -> list[Row]:
    """(number, JSON name, type, flags) of each field, in the Go struct's order. Flags:
    ``r`` repeated, ``m`` map (type is the value's), ``p`` Go pointer, ``e`` omitempty,
    ``z`` omitzero, ``i`` inline. A type with its own JSON form keeps its proto names."""
    package, _, name = message.rpartition(".")
    proto_fields = {f.number: f for f in sources.messages[message]}
    if _is_custom(message, sources):
        return [_row(f, f.name, "") for f in proto_fields.values()]
    go_fields = sources.go[package].structs.get(name)
    if go_fields is None:
        raise ProtoSourceError(f"{message}: no Go struct")
    if set(go_fields) != set(proto_fields):
        raise ProtoSourceError(f"{message}: Go and proto fields differ")
    rows = []
    for number, go in go_fields.items():
        flags = "".join(
            flag
            for flag, on in (
                ("p", go.pointer),
                ("e", go.omitempty),
                ("z", go.omitzero),
                ("i", go.inline),
            )
            if on
        )
        rows.append(_row(proto_fields[number], go.json_name, flags))
    return rows


def _row(proto: ProtoField, name: str, flags: str) -> Row:
    structure = ("r" if proto.repeated and not proto.map else "") + ("m" if proto.map else "")
    return (proto.number, name, proto.type, structure + flags)


def render(source: str, sources: Sources) -> str:
    """The Python module holding the table."""
    kinds = served_kinds(sources)
    messages = reachable([*kinds.values(), ENVELOPE], sources)
    custom = [m for m in messages if _is_custom(m, sources)]
    lines = [
        '"""The protobuf schema of the kinds kubectl may send, generated by',
        "``python -m p2pkube.api.kube.protogen`` from Kubernetes' generated.proto and Go types",
        "(SOURCE). Do not edit: regenerate (see protogen).",
        '"""',
        "",
        "Row = tuple[int, str, str, str]",
        '"""(field number, JSON name, type, flags): see protogen.message_rows."""',
        "",
        f"SOURCE = {_quote(source)}",
        f"ENVELOPE = {_quote(ENVELOPE)}",
        '"""The message after the magic bytes: typeMeta and the raw bytes of the object."""',
        "",
        "KINDS: dict[str, str] = {",
        *(f"    {_quote(key)}: {_quote(value)}," for key, value in kinds.items()),
        "}",
        '"""``apiVersion/kind`` (``*`` for any group) -> message."""',
        "",
        "CUSTOM_JSON = frozenset(",
        "    {",
        *(f"        {_quote(m)}," for m in custom),
        "    }",
        ")",
        '"""Messages with their own JSON form (a Go MarshalJSON): the decoder converts them."""',
        "",
        "MESSAGES: dict[str, tuple[Row, ...]] = {",
    ]
    for message in messages:
        lines.append(f"    {_quote(message)}: (")
        lines += [f"        {_row_literal(row)}," for row in message_rows(message, sources)]
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A string literal as ruff format writes it (double quotes)."""
    return json.dumps(text)


def _row_literal(row: Row) -> str:
    number, name, type_name, flags = row
    return f"({number}, {_quote(name)}, {_quote(type_name)}, {_quote(flags)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write the protobuf table from Kubernetes sources."
    )
    parser.add_argument("roots", nargs="+", type=Path, help="kubernetes/api, apimachinery trees")
    parser.add_argument("--source", required=True, help="which release, for the docstring")
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args(argv)
    args.out.write_text(render(args.source, read_sources(args.roots)))


if __name__ == "__main__":
    main()
