# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Kubernetes resource quantities ("7910m", "31Gi", "1e3", "100M"): the one parser the collection's
GPU discovery and vLLM decisions use. Pure functions; None for anything that is not a quantity, so
each caller words its own error (naming its input) or treats a missing figure as unknown.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from functools import lru_cache

# <signedNumber><suffix>: decimal SI (n u m k M G T P E), binary SI (Ki ... Ei), or a decimal exponent.
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([A-Za-z]*)$")
_SUFFIX = {
    "": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "E": 1e18, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4, "Pi": 1024 ** 5,
    "Ei": 1024 ** 6,
}
# Suffixes below one unit: a byte count given in them is a typo ("100m" for "100M"), not a size.
_FRACTION_SUFFIXES = ("n", "u", "m")


@lru_cache(maxsize=4096)
def _parse_text(text):
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _SUFFIX:
        return None
    return float(match.group(1)) * _SUFFIX[match.group(2)], match.group(2)


def parse_quantity(value):
    """Kubernetes quantity ("7910m", "31Gi", "1e3") or number to a float; None when missing or invalid."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    parsed = _parse_text(str(value).strip())
    return None if parsed is None else parsed[0]


def parse_int_quantity(value):
    """A count or byte quantity truncated to an int; None when missing or invalid."""
    number = parse_quantity(value)
    return None if number is None else int(number)


def parse_millicores(value):
    """A CPU quantity ("7910m", "4", 0.5) in millicores; None when missing or invalid."""
    number = parse_quantity(value)
    return None if number is None else int(round(number * 1000))


def parse_size_bytes(value):
    """A size ("16Gi", "100G", "1e9", 1024) in whole bytes; None when missing, invalid, negative or given in a
    suffix below one byte ("100m")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if value < 0 else int(value)
    parsed = _parse_text(str(value).strip())
    if parsed is None or parsed[0] < 0 or parsed[1] in _FRACTION_SUFFIXES:
        return None
    return int(parsed[0])


def parse_cpu_millicores(value):
    """A CPU amount (cores such as 4 or 0.5, millicores such as 500m) in millicores; None when missing,
    invalid or negative."""
    millicores = parse_millicores(value)
    return None if millicores is None or millicores < 0 else millicores


@lru_cache(maxsize=4096)
def parse_memory_mib(value):
    """GPU memory label to MiB: plain numbers are MiB (GFD, Karpenter), "192G"/"80Gi" are GiB.

    Not a Kubernetes quantity: node labels give GPU memory in MiB without a unit, and "G" there means GiB."""
    if value is None:
        return None
    text = str(value).strip()
    match = re.match(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$", text)
    if not match:
        return None
    number = float(match.group(1))
    unit = match.group(2).lower()
    if unit in ("", "mi", "mib", "m", "mb"):
        return int(number)
    if unit in ("g", "gi", "gib", "gb"):
        return int(number * 1024)
    if unit in ("t", "ti", "tib", "tb"):
        return int(number * 1024 * 1024)
    if unit in ("b",):
        return int(number / (1024 * 1024))
    return None
