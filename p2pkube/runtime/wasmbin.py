"""Just enough of the WebAssembly binary format to cap a module's memory and list its imports.

The browser has no ``Store.set_limits``: an instance's memory may grow to the maximum its
module declares (4 GiB when it declares none). So the browser runtime rewrites the maximum of
every memory the module defines to the pod's limit before compiling; ``memory.grow`` past it
then fails (returns -1) exactly as under wasmtime's limiter. It also reads the imports, to
tell the function imports from outside WASI that it links as traps. Pure Python, no
dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_BYTES = 65536
_MAGIC = b"\x00asm\x01\x00\x00\x00"
_IMPORT_SECTION = 2
_MEMORY_SECTION = 5
_MEMORY64 = 0x04
IMPORT_KINDS = ("func", "table", "memory", "global", "tag")
"""Import kinds by their byte in the import section."""


class WasmFormatError(ValueError):
    """The bytes are not a WebAssembly module this parser understands."""


class MemoryTooSmall(ValueError):
    """The module's memory starts bigger than the limit allows."""


@dataclass(frozen=True)
class MemoryLimits:
    minimum: int
    """Pages."""
    maximum: int | None


def _read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WasmFormatError("truncated LEB128 number")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WasmFormatError("LEB128 number too long")


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _sections(data: bytes) -> list[tuple[int, int, int, int]]:
    """``(id, header start, payload start, payload end)`` of every section (a size may be
    encoded with padding, so the header's length is not derived from the size)."""
    if not data.startswith(_MAGIC):
        raise WasmFormatError("not a WebAssembly module (bad magic or version)")
    pos, sections = len(_MAGIC), []
    while pos < len(data):
        section_id = data[pos]
        size, start = _read_uleb(data, pos + 1)
        end = start + size
        if end > len(data):
            raise WasmFormatError(f"section {section_id} runs past the end of the module")
        sections.append((section_id, pos, start, end))
        pos = end
    return sections


def _parse_memories(payload: bytes) -> list[tuple[int, MemoryLimits]]:
    count, pos = _read_uleb(payload, 0)
    memories = []
    for _ in range(count):
        if pos >= len(payload):
            raise WasmFormatError("truncated memory section")
        flags = payload[pos]
        if flags & _MEMORY64:
            raise WasmFormatError("64-bit memories are not supported")
        minimum, pos = _read_uleb(payload, pos + 1)
        maximum = None
        if flags & 0x01:
            maximum, pos = _read_uleb(payload, pos)
        memories.append((flags, MemoryLimits(minimum, maximum)))
    if pos != len(payload):
        raise WasmFormatError("memory section has trailing bytes")
    return memories


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str
    """One of :data:`IMPORT_KINDS`."""


def _read_name(payload: bytes, pos: int) -> tuple[str, int]:
    size, pos = _read_uleb(payload, pos)
    if pos + size > len(payload):
        raise WasmFormatError("truncated name in the import section")
    try:
        return payload[pos : pos + size].decode(), pos + size
    except UnicodeDecodeError:
        raise WasmFormatError("an import name is not UTF-8") from None


def _skip_limits(payload: bytes, pos: int) -> int:
    flags = payload[pos]
    _, pos = _read_uleb(payload, pos + 1)
    if flags & 0x01:
        _, pos = _read_uleb(payload, pos)
    return pos


def imports(data: bytes) -> list[Import]:
    """The module's imports, in order."""
    for section_id, _, start, end in _sections(data):
        if section_id != _IMPORT_SECTION:
            continue
        payload = data[start:end]
        count, pos = _read_uleb(payload, 0)
        found = []
        try:
            for _ in range(count):
                module, pos = _read_name(payload, pos)
                name, pos = _read_name(payload, pos)
                kind = payload[pos]
                if kind >= len(IMPORT_KINDS):
                    raise WasmFormatError(f"unknown import kind {kind} for {module}.{name}")
                pos += 1
                if kind == 0:  # a function: its type index
                    _, pos = _read_uleb(payload, pos)
                elif kind == 1:  # a table: its element type, then its limits
                    pos = _skip_limits(payload, pos + 1)
                elif kind == 2:  # a memory: its limits
                    pos = _skip_limits(payload, pos)
                elif kind == 3:  # a global: its value type and mutability
                    pos += 2
                else:  # a tag: its attribute and type index
                    _, pos = _read_uleb(payload, pos + 1)
                found.append(Import(module, name, IMPORT_KINDS[kind]))
        except IndexError:
            raise WasmFormatError("truncated import section") from None
        if pos != len(payload):
            raise WasmFormatError("import section has trailing bytes")
        return found
    return []


def memories(data: bytes) -> list[MemoryLimits]:
    """The limits of the memories the module defines (imported ones are not listed)."""
    for section_id, _, start, end in _sections(data):
        if section_id == _MEMORY_SECTION:
            return [limits for _, limits in _parse_memories(data[start:end])]
    return []


def cap_memory(data: bytes, max_bytes: int) -> bytes:
    """The module with every defined memory's maximum lowered to ``max_bytes`` (whole pages;
    a smaller declared maximum is kept). MemoryTooSmall when a memory's minimum is larger."""
    cap = max(0, max_bytes // PAGE_BYTES)
    for section_id, header, start, end in _sections(data):
        if section_id != _MEMORY_SECTION:
            continue
        parsed = _parse_memories(data[start:end])
        payload = bytearray(_uleb(len(parsed)))
        for flags, limits in parsed:
            if limits.minimum > cap:
                raise MemoryTooSmall(
                    f"the module's memory starts at {limits.minimum * PAGE_BYTES} bytes, "
                    f"more than the {cap * PAGE_BYTES}-byte limit"
                )
            maximum = cap if limits.maximum is None else min(limits.maximum, cap)
            payload.append(flags | 0x01)
            payload += _uleb(limits.minimum) + _uleb(maximum)
        section = bytes([_MEMORY_SECTION]) + _uleb(len(payload)) + bytes(payload)
        return data[:header] + section + data[end:]
    return data
