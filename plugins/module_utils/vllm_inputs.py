# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""What the ``vllm`` role's decisions share: the labels it puts on its objects, the input error, and
small pure checks of input values (sizes, CPU, whole numbers, environment lists, tolerations).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.llmops.serving.plugins.module_utils.k8s_quantity import (
    parse_cpu_millicores,
    parse_size_bytes,
)

MANAGED_BY = "llmops.serving.vllm"
MODEL_LABEL = "llmops.serving/model"
PART_OF = "llmops-serving"


class VllmInputError(ValueError):
    """A user input the role cannot work with; the message names the input and the fix."""


def parse_bytes(value, what):
    """Kubernetes quantity or integer -> bytes (int). ``what`` names the input in errors."""
    if isinstance(value, bool) or value is None:
        raise VllmInputError("%s: %r is not a size; use bytes or a Kubernetes quantity such as 40Gi" % (what, value))
    if isinstance(value, int):
        if value < 0:
            raise VllmInputError("%s: %r is negative" % (what, value))
        return value
    if isinstance(value, float):
        if value < 0:
            raise VllmInputError("%s: %r is negative" % (what, value))
        return int(value)
    size = parse_size_bytes(str(value))
    if size is None:
        raise VllmInputError("%s: %r is not a size; use bytes or a Kubernetes quantity such as 40Gi" % (what, value))
    return size


def parse_cpu(value, what):
    """CPU quantity -> millicores (int)."""
    if isinstance(value, bool) or value is None:
        raise VllmInputError(
            "%s: %r is not a CPU amount; use cores such as 4 or millicores such as 500m" % (what, value)
        )
    if isinstance(value, (int, float)):
        return int(round(value * 1000))
    millicores = parse_cpu_millicores(str(value))
    if millicores is None:
        raise VllmInputError(
            "%s: %r is not a CPU amount; use cores such as 4 or millicores such as 500m" % (what, value)
        )
    return millicores


def format_bytes(value):
    """Bytes -> short human string (GiB with one decimal, or MiB)."""
    if value >= 1024**3:
        return "%.1fGi" % (value / float(1024**3))
    return "%.0fMi" % (value / float(1024**2))


def whole_number(value, what, minimum=0):
    """Accept an int (or a string of digits); reject fractions and booleans with a clear message."""
    if isinstance(value, bool):
        raise VllmInputError("%s: %r is not a whole number" % (what, value))
    if isinstance(value, float):
        if value != int(value):
            raise VllmInputError(
                "%s: %r is not a whole number; GPUs are allocated whole (use MIG or time-slicing resources "
                "for fractions)" % (what, value)
            )
        value = int(value)
    elif not isinstance(value, int):
        text = str(value).strip()
        if not text.isdigit():
            raise VllmInputError("%s: %r is not a whole number" % (what, value))
        value = int(text)
    if value < minimum:
        raise VllmInputError("%s: %r must be at least %d" % (what, value, minimum))
    return value


def _as_env_list(env, what):
    """env given as a dict (name: value) or a Kubernetes env list -> list of env dicts."""
    if env is None:
        return []
    if isinstance(env, dict):
        out = []
        for key in sorted(env):
            value = env[key]
            if isinstance(value, dict):
                out.append(dict(value, name=key))
            else:
                out.append({"name": key, "value": _env_value(value)})
        return out
    if isinstance(env, list):
        out = []
        for item in env:
            if not isinstance(item, dict) or not item.get("name"):
                raise VllmInputError("%s: every entry needs a name (got %r)" % (what, item))
            item = dict(item)
            if "value" in item:
                item["value"] = _env_value(item["value"])
            out.append(item)
        return out
    raise VllmInputError("%s: use a dict of NAME: value or a Kubernetes env list (got %r)" % (what, env))


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def merge_env(*lists):
    """Merge env lists by name, later lists win, first position kept (SSA keys env by name)."""
    order = []
    by_name = {}
    for env in lists:
        for item in env:
            if item["name"] not in by_name:
                order.append(item["name"])
            by_name[item["name"]] = item
    return [by_name[name] for name in order]


def _merge_tolerations(*lists):
    out = []
    for tolerations in lists:
        for item in tolerations or []:
            if item not in out:
                out.append(item)
    return out


def _labels_match(selector, labels):
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def _truthy(value):
    """Booleans that may arrive as strings from inventories ("true", "yes", "1")."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)
