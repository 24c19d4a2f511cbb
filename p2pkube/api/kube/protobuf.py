"""Kubernetes protobuf request bodies, read as the JSON objects the API face already handles.

kubectl's typed commands (``create configmap|secret|namespace|deployment|job|cronjob|service``,
``create job --from``, drain's evictions and deletions) send their bodies as
``application/vnd.kubernetes.protobuf``, with no JSON fallback on a 415. Answers stay JSON,
which kubectl accepts, so only request bodies need reading: :func:`decode_body` turns one into
the dict Kubernetes' JSON encoding gives for the same object (JSON field names, inlined
structs, ``Time`` as RFC 3339, ``Quantity`` as its string, ``IntOrString`` as int or string,
bytes as base64), so the rest of the server never sees protobuf.

The body is ``k8s\\x00`` then a ``runtime.Unknown`` (typeMeta, raw, contentEncoding,
contentType); ``raw`` is the object's message. The schema comes from Kubernetes' own
generated.proto and Go types (Kubernetes v1.36.3: kubernetes/api v0.36.3 at 3fde3c43c3cf,
kubernetes/apimachinery v0.36.3 at 40bf4b2b62f8), written to ``protobuf_table.py`` by
:mod:`p2pkube.api.kube.protogen`. The wire format is read here rather than with the
``protobuf`` package: its low-level API decodes only compiled descriptors, and the
five-wire-type format is a few small functions, with every malformed input turned into
:class:`ProtobufError` instead of the library's own exceptions.

JSON presence follows Go's encoding: a field absent from the wire is left out; a zero number,
string or bool on the wire is kept when the Go field is a pointer (``replicas: 0``,
``gracePeriodSeconds: 0``) or has no ``omitempty``; a message on the wire is kept even when
empty (``status: {}``), except a zero ``omitzero`` one (``creationTimestamp``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from p2pkube.api.kube import protobuf_table as table

__all__ = [
    "CONTENT_TYPE",
    "MAGIC",
    "ProtobufError",
    "UnknownKindError",
    "decode_body",
    "is_protobuf",
]

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
MAX_DEPTH = 64
"""Nesting deeper than any Kubernetes object (a PodSpec is about ten levels down)."""

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
NUMERIC_TYPES = frozenset({"bool", "int32", "int64"})

WireValue = int | bytes


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object this server can read."""


class UnknownKindError(ProtobufError):
    """A well-formed body of a kind with no schema here (not one the API serves)."""


def is_protobuf(content_type: str | None) -> bool:
    """Whether a Content-Type header names Kubernetes protobuf (parameters ignored)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == CONTENT_TYPE


def decode_body(data: bytes) -> dict[str, Any]:
    """The JSON form of a Kubernetes protobuf body, ``kind`` and ``apiVersion`` first.
    Raises :class:`ProtobufError` (a ValueError) naming what is wrong, and its subclass
    :class:`UnknownKindError` for a kind with no schema here."""
    if not data.startswith(MAGIC):
        raise ProtobufError("not Kubernetes protobuf: the body does not start with 'k8s\\x00'")
    envelope = _proto_values(table.ENVELOPE, data[len(MAGIC) :], depth=0)
    if envelope.get("contentEncoding"):
        raise ProtobufError(f"unsupported contentEncoding {envelope['contentEncoding']!r}")
    if envelope.get("contentType", "") not in ("", CONTENT_TYPE):
        raise ProtobufError(f"unsupported contentType {envelope['contentType']!r}")
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    if not api_version or not kind:
        raise ProtobufError("the protobuf envelope names no apiVersion and kind")
    message = table.KINDS.get(f"{api_version}/{kind}") or table.KINDS.get(f"*/{kind}")
    if message is None:
        raise UnknownKindError(f"no protobuf schema for {kind} in {api_version}")
    fields = _message(message, envelope.get("raw", b""), depth=1)
    return {"kind": kind, "apiVersion": api_version, **fields}


# --- the wire format ---------------------------------------------------------------------


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at ``position``."""
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & 0xFFFF_FFFF_FFFF_FFFF, position
    raise ProtobufError("varint longer than 10 bytes")


def _wire_fields(data: bytes) -> Iterator[tuple[int, int, WireValue]]:
    """(field number, wire type, value) of each field of a message, in wire order: an int
    for varints and fixed-width numbers, the bytes of a length-delimited field."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        value: WireValue
        if wire_type == VARINT:
            value, position = _varint(data, position)
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            value = int.from_bytes(_take(data, position, width), "little")
            position += width
        elif wire_type == LENGTH_DELIMITED:
            length, position = _varint(data, position)
            value = _take(data, position, length)
            position += length
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire_type}")
        yield number, wire_type, value


def _take(data: bytes, position: int, length: int) -> bytes:
    if position + length > len(data):
        raise ProtobufError("truncated field")
    return data[position : position + length]


def _packed_varints(data: bytes) -> Iterator[int]:
    position = 0
    while position < len(data):
        value, position = _varint(data, position)
        yield value


# --- values ------------------------------------------------------------------------------


def _signed(value: int, bits: int) -> int:
    """A varint as Go reads it into an intN: the low bits, two's complement."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(type_name: str, wire_type: int, value: WireValue) -> int | bool | str | bytes:
    """A scalar as Go holds it (bytes stay bytes)."""
    if type_name in NUMERIC_TYPES:
        if wire_type != VARINT or not isinstance(value, int):
            raise ProtobufError(f"a {type_name} with wire type {wire_type}")
        if type_name == "bool":
            return value != 0
        return _signed(value, 32 if type_name == "int32" else 64)
    if type_name not in ("string", "bytes"):
        raise ProtobufError(f"the protobuf table names an unknown type {type_name}")
    if wire_type != LENGTH_DELIMITED or not isinstance(value, bytes):
        raise ProtobufError(f"a {type_name} with wire type {wire_type}")
    if type_name == "bytes":
        return value
    try:
        return value.decode()
    except UnicodeDecodeError as error:
        raise ProtobufError(f"a string that is not UTF-8: {error}") from None


def _json_scalar(value: int | bool | str | bytes) -> int | bool | str:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def _message_bytes(wire_type: int, value: WireValue) -> bytes:
    if wire_type != LENGTH_DELIMITED or not isinstance(value, bytes):
        raise ProtobufError(f"a message with wire type {wire_type}")
    return value


@cache
def _rows_by_number(message: str) -> dict[int, table.Row]:
    rows = table.MESSAGES.get(message)
    if rows is None:
        raise ProtobufError(f"message {message} is not in the protobuf table")
    return {row[0]: row for row in rows}


def _collect(message: str, data: bytes) -> dict[int, list[tuple[int, WireValue]]]:
    """The occurrences of each known field; fields of a newer release are skipped, as Go's
    decoder does."""
    known = _rows_by_number(message)
    occurrences: dict[int, list[tuple[int, WireValue]]] = {}
    for number, wire_type, value in _wire_fields(data):
        if number in known:
            occurrences.setdefault(number, []).append((wire_type, value))
    return occurrences


def _message(message: str, data: bytes, depth: int) -> Any:
    """The JSON form of one message: a dict, or a custom type's own form."""
    if depth > MAX_DEPTH:
        raise ProtobufError(f"messages nested deeper than {MAX_DEPTH}")
    if message in table.CUSTOM_JSON:
        converter = _CUSTOM.get(message)
        if converter is None:
            raise ProtobufError(f"no JSON form for {message}")
        return converter(_proto_values(message, data, depth), bool(data))
    occurrences = _collect(message, data)
    result: dict[str, Any] = {}
    for number, name, type_name, flags in table.MESSAGES[message]:
        if number not in occurrences:
            continue
        value = _field_json(type_name, flags, occurrences[number], depth)
        if value is _OMITTED:
            continue
        if "i" in flags and isinstance(value, dict):
            result.update(value)
        else:
            result[name] = value
    return result


_OMITTED = object()


def _field_json(
    type_name: str, flags: str, occurrences: list[tuple[int, WireValue]], depth: int
) -> Any:
    if "m" in flags:
        return dict(_map_entry(type_name, *o, depth) for o in occurrences)
    if "r" in flags:
        return [item for o in occurrences for item in _repeated_items(type_name, *o, depth)]
    if type_name in table.MESSAGES:
        # A singular message sent in several pieces merges, as protobuf concatenation does.
        data = b"".join(_message_bytes(*o) for o in occurrences)
        value = _message(type_name, data, depth + 1)
        return _OMITTED if value is None and "z" in flags else value
    scalar = _json_scalar(_scalar(type_name, *occurrences[-1]))
    keep_zero = "p" in flags or "e" not in flags
    return scalar if keep_zero or scalar not in ("", 0) else _OMITTED


def _value(type_name: str, wire_type: int, value: WireValue, depth: int) -> Any:
    """The JSON form of one value: a message's or a scalar's."""
    if type_name in table.MESSAGES:
        return _message(type_name, _message_bytes(wire_type, value), depth + 1)
    return _json_scalar(_scalar(type_name, wire_type, value))


def _repeated_items(type_name: str, wire_type: int, value: WireValue, depth: int) -> list[Any]:
    """The values one occurrence of a repeated field carries (several when packed)."""
    if type_name in NUMERIC_TYPES and isinstance(value, bytes):
        return [_value(type_name, VARINT, item, depth) for item in _packed_varints(value)]
    return [_value(type_name, wire_type, value, depth)]


def _map_entry(type_name: str, wire_type: int, value: WireValue, depth: int) -> tuple[str, Any]:
    """A map entry is a message of ``key = 1`` (a string in Kubernetes) and ``value = 2``;
    a missing value is the type's zero, as Go reads it."""
    key, entry_value = "", _OMITTED
    for number, item_wire_type, item in _wire_fields(_message_bytes(wire_type, value)):
        if number == 1:
            key = str(_scalar("string", item_wire_type, item))
        elif number == 2:
            entry_value = _value(type_name, item_wire_type, item, depth)
    if entry_value is _OMITTED:
        zero: tuple[int, WireValue] = (
            (VARINT, 0) if type_name in NUMERIC_TYPES else (LENGTH_DELIMITED, b"")
        )
        entry_value = _value(type_name, *zero, depth)
    return key, entry_value


# --- types with their own JSON form ------------------------------------------------------


def _proto_values(message: str, data: bytes, depth: int) -> dict[str, Any]:
    """A message's fields by proto name, as Go holds them (bytes stay bytes), for the types
    whose JSON form is computed from them."""
    if depth > MAX_DEPTH:
        raise ProtobufError(f"messages nested deeper than {MAX_DEPTH}")
    rows = _rows_by_number(message)
    values: dict[str, Any] = {}
    for number, occurrences in _collect(message, data).items():
        _, name, type_name, flags = rows[number]
        if "r" in flags or "m" in flags:
            raise ProtobufError(f"{message}.{name}: a list in a custom-JSON type")
        if type_name in table.MESSAGES:
            joined = b"".join(_message_bytes(*o) for o in occurrences)
            values[name] = _message(type_name, joined, depth + 1)
        else:
            values[name] = _scalar(type_name, *occurrences[-1])
    return values


def _timestamp(values: dict[str, Any], micro: bool) -> str | None:
    """Go's zero time is ``null``; any other is RFC 3339 in UTC, with microseconds for a
    MicroTime (Time drops the fraction), as Go formats them."""
    seconds, nanos = values.get("seconds", 0), values.get("nanos", 0)
    try:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
        moment += timedelta(microseconds=nanos // 1000)
    except OverflowError:
        raise ProtobufError(f"a time out of range: {seconds} s") from None
    if moment == datetime(1, 1, 1, tzinfo=UTC):
        return None
    fraction = f".{moment.microsecond:06d}" if micro else ""
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{fraction}Z"


def _time(values: dict[str, Any], present: bool) -> str | None:
    return _timestamp(values, micro=False) if present else None


def _micro_time(values: dict[str, Any], present: bool) -> str | None:
    return _timestamp(values, micro=True) if present else None


def _quantity(values: dict[str, Any], present: bool) -> str:
    return values.get("string") or "0"


def _int_or_string(values: dict[str, Any], present: bool) -> int | str:
    kind = values.get("type", 0)
    if kind == 0:
        return int(values.get("intVal", 0))
    if kind == 1:
        return str(values.get("strVal", ""))
    raise ProtobufError(f"IntOrString of type {kind}")


def _raw_json(raw: bytes | None) -> Any:
    """Embedded JSON, as Go writes it into the object's JSON (nothing on the wire: null)."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ProtobufError(f"embedded JSON that does not parse: {error}") from None


def _fields_v1(values: dict[str, Any], present: bool) -> Any:
    return _raw_json(values.get("Raw"))


def _raw_extension(values: dict[str, Any], present: bool) -> Any:
    return _raw_json(values.get("raw"))


_CUSTOM: dict[str, Callable[[dict[str, Any], bool], Any]] = {
    "meta/v1.Time": _time,
    "meta/v1.MicroTime": _micro_time,
    "meta/v1.FieldsV1": _fields_v1,
    "resource.Quantity": _quantity,
    "intstr.IntOrString": _int_or_string,
    "runtime.RawExtension": _raw_extension,
}
"""The JSON form of each type with a Go MarshalJSON, from its proto fields and whether any
bytes were on the wire. ``runtime.Unknown`` is only ever the envelope."""


def custom_types_without_form() -> set[str]:
    """Custom-JSON types in the table that the decoder cannot convert (none, or regenerate
    brought a new one: tests check)."""
    return set(table.CUSTOM_JSON) - set(_CUSTOM) - {table.ENVELOPE}
