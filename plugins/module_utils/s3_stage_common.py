# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Shared by the model staging files (s3_stage and the s3_* files it is split into): the error type,
the layout constants, and pure helpers for names, sizes, filters and parameters.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import json
import os
import tempfile

MANIFEST_NAME = ".llmops-manifest.json"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
DEFAULT_EXCLUDE = [".git/*", ".cache/*", "*.llmops-partial"]
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10000
MAX_SINGLE_PUT = 5 * 1024 * 1024 * 1024
HASH_CHUNK = 8 * 1024 * 1024
PARTIAL_SUFFIX = ".llmops-partial"


class StageError(Exception):
    """A user-facing failure: the message names the input or object and the fix."""

    def __init__(self, message, **details):
        super(StageError, self).__init__(message)
        self.message = message
        self.details = details


def default_concurrency(cores):
    """Requests in flight when the task names no ``concurrency``: 16 on small machines (the 2-core
    benchmark's setting), twice the cores where that is more, at most 32. On 16 cores (benchmarks/s3,
    4 x 1 GiB push) 32 was 3-5 % faster than 16 and 64 about 20 % slower than either; peak buffers
    are concurrency x part_size (2 GiB at 32 x 64 MiB)."""
    return max(16, min(32, 2 * int(cores or 1)))


def normalize_prefix(prefix):
    """``'/models/llama//'`` -> ``'models/llama/'``; ``''`` stays ``''`` (bucket root)."""
    parts = [p for p in (prefix or "").replace("\\", "/").split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise StageError("prefix %r must not contain '.' or '..' segments" % prefix)
    return "/".join(parts) + "/" if parts else ""


def object_key(prefix, relpath):
    return prefix + relpath


def checkpoint_path(bucket, prefix):
    return "s3://%s/%s" % (bucket, prefix)


def part_size_for(size, part_size):
    """The part size actually used for a file: grown (to whole MiB) when it would need > 10000 parts."""
    if size > part_size * MAX_PARTS:
        mib = 1024 * 1024
        needed = -(-size // MAX_PARTS)
        return -(-needed // mib) * mib
    return part_size


def part_ranges(size, part_size):
    """[(part_number, offset, length)] covering ``size`` bytes; a 0-byte file has one empty part."""
    if size == 0:
        return [(1, 0, 0)]
    ranges = []
    offset = 0
    number = 1
    while offset < size:
        length = min(part_size, size - offset)
        ranges.append((number, offset, length))
        offset += length
        number += 1
    return ranges


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
               "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3}


def parse_size(value, name="part_size"):
    """``64MiB`` / ``64MB`` / ``64M`` / ``67108864`` -> bytes (units are powers of 1024, as in Ansible)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower().replace(" ", "")
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits):]
    try:
        number = float(digits)
    except ValueError:
        number = None
    if number is None or unit not in _SIZE_UNITS or number < 0:
        raise StageError("%s %r is not a size: give bytes or a value such as 64MiB" % (name, value))
    return int(number * _SIZE_UNITS[unit])


def uses_multipart(size, part_size):
    return size > part_size or size > MAX_SINGLE_PUT


def path_selected(relpath, include, exclude):
    """fnmatch filters on the posix relative path (``*`` also matches ``/``)."""
    if relpath == MANIFEST_NAME:
        return False
    if include and not any(fnmatch.fnmatchcase(relpath, pat) for pat in include):
        return False
    return not any(fnmatch.fnmatchcase(relpath, pat) for pat in (exclude or []))


def validate_stage_params(params):
    """Errors in the module's non-connection options, as a list of messages (checked before I/O)."""
    errors = []
    mode = params.get("mode")
    if mode == "push" and not params.get("src"):
        errors.append("mode=push needs src: the local directory holding the model")
    if mode == "pull" and not params.get("dest"):
        errors.append("mode=pull needs dest: the local directory to download the model into")
    if mode != "push" and params.get("src"):
        errors.append("src is only used with mode=push (mode is %s); use dest for pull" % mode)
    if mode != "pull" and params.get("dest"):
        errors.append("dest is only used with mode=pull (mode is %s)" % mode)
    concurrency = params.get("concurrency")
    if concurrency is not None and not 1 <= concurrency <= 256:
        errors.append("concurrency must be between 1 and 256, got %s" % concurrency)
    part_size = params.get("part_size")
    if isinstance(part_size, int) and not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        errors.append("part_size must be between 5MiB and 5GiB (S3 limits), got %s bytes" % part_size)
    if not params.get("bucket"):
        errors.append("bucket must be a non-empty bucket name")
    return errors


def mib_per_second(nbytes, seconds):
    return round(nbytes / (1024.0 * 1024.0) / seconds, 1) if seconds > 0 else 0.0


def _atomic_write_json(path, data):
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def interleave(lists):
    """Round-robin merge: first item of each list, then the second of each, ... Spreading parallel
    downloads over several files keeps writers off a single inode's lock and lets several files
    be hashed at once."""
    merged = []
    longest = max([len(items) for items in lists] or [0])
    for position in range(longest):
        for items in lists:
            if position < len(items):
                merged.append(items[position])
    return merged
