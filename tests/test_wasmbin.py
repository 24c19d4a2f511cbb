"""The memory cap the browser runtime writes into modules, checked with a real engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from p2pkube.runtime import wasmbin

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"

# A module defining one memory of 1 page, no maximum, exporting a function that grows it by
# its argument and returns the old size (or -1).
GROWER = wasmtime.wat2wasm(
    """(module (memory (export "memory") 1)
         (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""
)


def grow_to(module: bytes, pages: int) -> int:
    store = wasmtime.Store()
    instance = wasmtime.Instance(store, wasmtime.Module(store.engine, module), [])
    grow = instance.exports(store)["grow"]
    return int(grow(store, pages - 1))  # type: ignore[operator]


def test_capped_memory_cannot_grow_past_the_limit() -> None:
    assert wasmbin.memories(GROWER) == [wasmbin.MemoryLimits(1, None)]
    capped = wasmbin.cap_memory(GROWER, 10 * wasmbin.PAGE_BYTES + 123)  # whole pages: 10
    assert wasmbin.memories(capped) == [wasmbin.MemoryLimits(1, 10)]
    assert grow_to(capped, 10) == 1  # up to the cap: fine
    assert grow_to(capped, 11) == -1  # past it: refused, as under a store limit
    assert grow_to(GROWER, 11) == 1  # the original is unbounded


def test_a_smaller_declared_maximum_is_kept_and_a_big_minimum_is_refused() -> None:
    small = wasmtime.wat2wasm('(module (memory (export "memory") 2 4))')
    assert wasmbin.memories(wasmbin.cap_memory(small, 64 << 20)) == [wasmbin.MemoryLimits(2, 4)]
    with pytest.raises(wasmbin.MemoryTooSmall, match="starts at 131072 bytes"):
        wasmbin.cap_memory(small, wasmbin.PAGE_BYTES)


def test_real_c_modules_keep_working_when_capped() -> None:
    for name in ("hello", "membomb", "primes"):
        data = (BUILD / f"{name}.wasm").read_bytes()
        capped = wasmbin.cap_memory(data, 32 << 20)
        (limits,) = wasmbin.memories(capped)
        assert limits.maximum == 512
        wasmtime.Module(wasmtime.Engine(), capped)  # still a valid module


def test_garbage_is_a_format_error() -> None:
    for data in (b"", b"\x00asm\x02\x00\x00\x00", GROWER[:-3], b"\x00asm\x01\x00\x00\x00\x05\xff"):
        with pytest.raises(wasmbin.WasmFormatError):
            wasmbin.cap_memory(data, 1 << 20)
