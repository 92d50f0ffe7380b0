"""The field checks of the typed configuration (``newllm.config``): each builder returns a check
that gives None when a value is fine, else what is allowed, which the ``ConfigError`` shows."""
from __future__ import annotations

import math
from dataclasses import field
from typing import Any, Callable


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _numeric_string_hint(v: Any, whole: bool = False) -> str:
    """A number that reached us as a string: quoted, or ``1e-3`` (YAML 1.1, as PyYAML reads
    it, needs a decimal point in exponent floats). Say how to write it."""
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return ""
        how = "without quotes" if whole else "without quotes and with a decimal point, e.g. 1.0e-3"
        return f" (YAML read {v!r} as a string; write the number {how})"
    return ""


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        rng = f"an integer{f' >= {lo}' if lo is not None else ''}{f' and <= {hi}' if hi is not None else ''}"
        if not _is_int(v):
            return rng + _numeric_string_hint(v, whole=True)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return rng
        return None

    return check


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        lo_s = "" if lo is None else f" {'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi}"
        desc = f"a finite number{lo_s}{' and' if lo_s and hi_s else ''}{hi_s}"
        if not _is_num(v):
            return desc + _numeric_string_hint(v)
        if lo is not None and (v <= lo if lo_open else v < lo):
            return desc
        if hi is not None and (v >= hi if hi_open else v > hi):
            return desc
        return None

    return check


def choice(*allowed: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) and not any(isinstance(a, bool) for a in allowed):
            return "one of " + ", ".join(repr(a) for a in allowed)
        return None if v in allowed else "one of " + ", ".join(repr(a) for a in allowed)

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def string(allow_empty: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, str) or (not allow_empty and not v.strip()):
            return "a string" if allow_empty else "a non-empty string"
        return None

    return check


def string_list(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        return "a list of strings"
    return None


def F(default: Any, check: Callable[[Any], str | None], doc: str = "") -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"check": check, "doc": doc})
    return field(default=default, metadata={"check": check, "doc": doc})
