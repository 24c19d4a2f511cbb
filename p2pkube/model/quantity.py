"""Kubernetes resource quantities (``500m``, ``2``, ``128Mi``, ``1G``, ``1.5Gi``).

Parsed to exact fractions so comparisons of requests against capacity never suffer float
rounding; formatted back the way kubectl prints node capacity.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)([eE][+-]?[0-9]+)?([A-Za-z]*)$")


PARSED_CACHE_SIZE = 4096
"""Distinct quantity strings whose parse is remembered. A cluster uses a few dozen (``100m``,
``64Mi``, a node's capacity), read again at every admission, placement and status change:
``Fraction(str)`` costs ~20 µs, which a 1,000-pod burst paid hundreds of thousands of times.
Bounded (least recently used first out) so that a peer writing endless distinct quantities
cannot grow it."""


def parse_quantity(text: str | int | float) -> Fraction:
    """Parse a quantity; raises ValueError naming what is wrong."""
    if isinstance(text, bool):
        raise ValueError("must be a quantity like 500m, 2, 128Mi, not a boolean")
    if isinstance(text, int | float):
        return Fraction(str(text))
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a quantity (examples: 500m, 2, 128Mi, 1G)")
    return _parse_text(text)


@lru_cache(maxsize=PARSED_CACHE_SIZE)
def _parse_text(text: str) -> Fraction:
    """``parse_quantity`` of a string (Fractions are immutable: one may be shared; errors
    are raised again at each call, never cached)."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a quantity (examples: 500m, 2, 128Mi, 1G)")
    number, exponent, suffix = match.groups()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{text!r} has an unknown suffix {suffix!r}")
    if exponent and suffix:
        raise ValueError(f"{text!r} mixes an exponent and a suffix")
    value = Fraction(number) * _SUFFIXES[suffix]
    if exponent:
        value *= Fraction(10) ** int(exponent[1:])
    return value


def format_bytes(value: int) -> str:
    """Bytes as kubectl-style memory: exact Gi/Mi/Ki when it divides, else whole Mi rounded down.

    Rounding down keeps a node's advertised capacity conservative (never more than it has).
    """
    for suffix in ("Ti", "Gi", "Mi"):
        unit = int(_SUFFIXES[suffix])
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    if value >= 2**20:
        return f"{value // 2**20}Mi"
    if value >= 2**10 and value % 2**10 == 0:
        return f"{value // 2**10}Ki"
    return str(value)


def format_cpu(value: Fraction) -> str:
    """CPU cores as ``2`` or ``500m``."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{int(value * 1000)}m"


def format_nanocores(nanocores: int) -> str:
    """CPU in nanocores as Kubernetes writes a quantity made at nano scale, which is how
    metrics-server shows usage: the largest of the units ``n``, ``u``, ``m`` and cores that
    holds it exactly (``12345678n``, ``15m``, ``2``)."""
    if nanocores < 0:
        raise ValueError(f"CPU usage cannot be negative ({nanocores}n)")
    for suffix, scale in (("", 10**9), ("m", 10**6), ("u", 10**3)):
        if nanocores and nanocores % scale == 0:
            return f"{nanocores // scale}{suffix}"
    return f"{nanocores}n" if nanocores else "0"


def format_binary(value: int) -> str:
    """Bytes as Kubernetes writes a binary-SI quantity, exactly: the largest power of 1024
    that divides it (``123456Ki``, ``64Mi``), else the plain number. Unlike
    :func:`format_bytes` nothing is rounded: usage is shown as measured."""
    if value < 0:
        raise ValueError(f"memory usage cannot be negative ({value})")
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIXES[suffix])
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
