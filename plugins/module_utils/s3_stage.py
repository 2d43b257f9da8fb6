# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Model weights <-> S3-compatible bucket: planning (pure), transfer and manifest.

Layout of a staged model at ``s3://bucket/prefix/``: the model's files under their relative paths
plus ``.llmops-manifest.json``, written last. The manifest lists every file with size, SHA-256 and
the ETag the object had when the manifest was written, and a summary of the model. Readers (pull,
verify, the vLLM role) trust a prefix only through a manifest that matches the bucket listing.

Decisions are pure functions of plain data (``plan_push``, ``plan_pull``, ``listing_problems``,
``check_model_files``, ``summarize_model``, ``resume_parts``...). I/O sits in ``LocalFiles``,
``HashCache``, ``UploadJournal``, ``TransferEngine`` and the ``run_*`` functions.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import select
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from ansible_collections.llmops.serving.plugins.module_utils.s3 import (
    ClientError,
    describe_s3_error,
    error_code,
)

MANIFEST_NAME = ".llmops-manifest.json"
MANIFEST_FORMAT = "llmops.serving/model-manifest"
MANIFEST_VERSION = 1
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
DEFAULT_EXCLUDE = [".git/*", ".cache/*", "*.llmops-partial"]
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10000
MAX_SINGLE_PUT = 5 * 1024 * 1024 * 1024
HASH_CHUNK = 8 * 1024 * 1024
# Downloads move through one reused 128 KiB buffer per worker: the socket is read straight into it
# and it is pwritten while still in the CPU cache. Measured on the benchmark box (2 cores, MinIO
# local, 4 GiB pull): 12-13 CPU s with botocore's 1 MiB chunks (a new bytes object per chunk,
# copied by urllib3), 7.5-8 CPU s this way, of which ~2.5 s is SHA-256.
DOWNLOAD_CHUNK = 128 * 1024
# Hashing a downloaded part reads it back from the page cache in chunks this size, into a reused buffer.
REHASH_CHUNK = 256 * 1024
# Over plain HTTP on Linux a ranged GET's body goes socket -> pipe -> file with splice(2): the kernel
# moves it into the page cache without the copy through our buffer. Measured on the benchmark box
# (4 x 1 GiB, 8 workers, no hashing): 1.9-2.2 s system CPU and 3.9-4.4 s instead of 3.0-3.9 s and
# 5.1-6.4 s. TLS sockets (the bytes must be decrypted in user space) and platforms without
# os.splice use the buffer path above.
SPLICE_CHUNK = 1024 * 1024
# Least bytes a PartBody read hands to urllib3 / botocore (see PartBody).
SEND_CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031  # fcntl.h on Linux; Python's fcntl module names it only since 3.10
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
PARTIAL_SUFFIX = ".llmops-partial"
# A pull downloads a file into ``.<name>.<id>.llmops-partial`` next to it and appends the byte ranges
# that reached the disk to ``.<name>.<id>.progress.llmops-partial``, so that a re-run after a kill,
# a reboot or a dead server fetches only what is missing (``<id>``: path, size and manifest SHA-256).
PROGRESS_SUFFIX = ".progress" + PARTIAL_SUFFIX
PROGRESS_FORMAT = "llmops.serving/pull-progress"
# Every PULL_CHECKPOINT bytes of a ranged GET (and at its end) the file's data is fdatasync'ed and the
# range appended to the progress log (written O_DSYNC): a kill loses at most this much per request in
# flight. Measured on the benchmark box (16 writers, 2 GiB): fdatasync every 4 MiB was within the
# noise of no fdatasync at all.
PULL_CHECKPOINT = 4 * 1024 * 1024
# Names longer than this are cut in partial file names (the id keeps them apart; NAME_MAX is 255).
PARTIAL_NAME_KEEP = 160

SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1,
    "F6_E3M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8,
    "I64": 8, "F64": 8, "C64": 8,
}
TORCH_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8,
                     "int8": 1, "uint8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}


class StageError(Exception):
    """A user-facing failure: the message names the input or object and the fix."""

    def __init__(self, message, **details):
        super(StageError, self).__init__(message)
        self.message = message
        self.details = details


# --------------------------------------------------------------------------------------------
# Pure helpers: names, sizes, filters
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Pure helpers: model files and summary
# --------------------------------------------------------------------------------------------

def parse_safetensors_header(blob, file_size, name):
    """Validate a safetensors header; return ``(header_dict, parameter_count)``.

    ``blob`` starts with the 8-byte little-endian header length followed by (at least) the header.
    """
    if file_size < 8 or len(blob) < 8:
        raise StageError("weights file %s is not a safetensors file: shorter than its 8-byte header length" % name)
    (length,) = struct.unpack("<Q", blob[:8])
    if length > MAX_SAFETENSORS_HEADER or 8 + length > file_size:
        raise StageError("weights file %s is not a valid safetensors file: header length %d does not fit "
                         "the file size %d" % (name, length, file_size))
    if len(blob) < 8 + length:
        raise StageError("weights file %s: header truncated" % name)
    try:
        header = json.loads(blob[8:8 + length].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StageError("weights file %s is not a valid safetensors file: header is not JSON (%s)"
                         % (name, exc)) from None
    if not isinstance(header, dict):
        raise StageError("weights file %s is not a valid safetensors file: header is not an object" % name)
    data_size = file_size - 8 - length
    params = 0
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = info["shape"]
            start, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise StageError("weights file %s: tensor %r lacks dtype/shape/data_offsets" % (name, tensor)) from None
        if end > data_size or start > end:
            raise StageError("weights file %s: tensor %r data_offsets [%s, %s] exceed the %d data bytes "
                             "(file truncated?)" % (name, tensor, start, end, data_size))
        count = 1
        for dim in shape:
            count *= int(dim)
        width = SAFETENSORS_DTYPE_BYTES.get(dtype)
        if width is not None and dtype not in ("F4",) and count * width != end - start:
            raise StageError("weights file %s: tensor %r has %d bytes for shape %s %s" %
                             (name, tensor, end - start, shape, dtype))
        params += count
    return header, params


def check_model_files(relpaths, required_files=None, index_data=None):
    """Errors for a model made of ``relpaths`` (list of messages, empty when complete).

    ``required_files=None`` means the default check: ``config.json`` plus safetensors weights, and
    when ``model.safetensors.index.json`` is present every shard it names. A list replaces that check
    with "these paths exist".
    """
    present = set(relpaths)
    if required_files is not None:
        return ["required file %s is missing" % name for name in required_files if name not in present]
    errors = []
    if CONFIG_NAME not in present:
        errors.append("config.json is missing: a Hugging Face model directory needs its config.json")
    weights = sorted(p for p in present if p.endswith(".safetensors"))
    if not weights:
        errors.append("no *.safetensors weights found (LLM Engine and vLLM load safetensors; convert .bin "
                      "checkpoints first, or set required_files to skip this check)")
    if INDEX_NAME in present:
        if index_data is None:
            errors.append("%s could not be read" % INDEX_NAME)
        else:
            weight_map = index_data.get("weight_map") if isinstance(index_data, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                errors.append("%s has no weight_map" % INDEX_NAME)
            else:
                base = ""
                for shard in sorted(set(weight_map.values())):
                    if base + shard not in present:
                        errors.append("shard %s listed in %s is missing" % (shard, INDEX_NAME))
    return errors


def estimate_parameters(config):
    """Parameter estimate from a decoder-only transformer config.json, or None."""
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    heads = int(cfg.get("num_attention_heads") or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    intermediate = int(cfg.get("intermediate_size") or 4 * hidden)
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
    attention = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    mlp = 3 * hidden * intermediate * experts
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden
    lm_head = 0 if cfg.get("tie_word_embeddings") else vocab * hidden
    return embeddings + layers * per_layer + hidden + lm_head


def summarize_model(config, files, parameters=None):
    """The model summary kept in the manifest: architecture, dtype, parameters, sizes.

    ``files`` maps relpath -> size; ``parameters`` is the exact count from safetensors headers when
    known, else it is estimated from config.json.
    """
    config = config if isinstance(config, dict) else {}
    archs = config.get("architectures") or []
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype is None and isinstance(config.get("text_config"), dict):
        dtype = config["text_config"].get("torch_dtype") or config["text_config"].get("dtype")
    weights = dict((p, s) for p, s in files.items() if p.endswith(".safetensors"))
    source = "safetensors_header"
    if parameters is None:
        parameters = estimate_parameters(config)
        source = "config_estimate" if parameters is not None else None
    quant = config.get("quantization_config")
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    summary = {
        "architecture": archs[0] if archs else None,
        "model_type": config.get("model_type"),
        "dtype": dtype,
        "parameters": parameters,
        "parameters_billions": round(parameters / 1e9, 3) if parameters else None,
        "parameters_source": source,
        "quantization": quant.get("quant_method") if isinstance(quant, dict) else None,
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "num_attention_heads": cfg.get("num_attention_heads"),
        "num_key_value_heads": cfg.get("num_key_value_heads", cfg.get("num_attention_heads")),
        "vocab_size": cfg.get("vocab_size"),
        "max_position_embeddings": cfg.get("max_position_embeddings"),
        "weight_files": len(weights),
        "weights_bytes": sum(weights.values()),
        "total_bytes": sum(files.values()),
        "file_count": len(files),
    }
    return summary


# --------------------------------------------------------------------------------------------
# Pure helpers: manifest
# --------------------------------------------------------------------------------------------

def build_manifest(files, summary, created=None):
    """``files``: relpath -> {size, sha256, etag}."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "created": created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files.values()),
        "summary": summary,
        "files": dict((k, dict(size=v["size"], sha256=v["sha256"], etag=v.get("etag")))
                      for k, v in sorted(files.items())),
    }


def manifest_content(manifest):
    """What decides whether a manifest must be rewritten (everything except the timestamp)."""
    if not manifest:
        return None
    return dict((k, v) for k, v in manifest.items() if k != "created")


def parse_manifest(raw, where):
    """Parse and validate manifest bytes; raise StageError naming ``where`` and the problem."""
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StageError("manifest %s is not valid JSON (%s): re-run mode=push to rewrite it" % (where, exc)) from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise StageError("%s is not an llmops.serving model manifest (format %r): re-run mode=push"
                         % (where, data.get("format") if isinstance(data, dict) else None))
    if data.get("version") != MANIFEST_VERSION:
        raise StageError("manifest %s has version %r, this collection reads version %d: upgrade the "
                         "collection or re-run mode=push" % (where, data.get("version"), MANIFEST_VERSION))
    files = data.get("files")
    if not isinstance(files, dict):
        raise StageError("manifest %s has no files map: re-run mode=push" % where)
    for rel, entry in files.items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64):
            raise StageError("manifest %s: entry %r lacks size/sha256: re-run mode=push" % (where, rel))
        if rel.startswith("/") or ".." in rel.split("/"):
            raise StageError("manifest %s: unsafe path %r" % (where, rel))
    return data


def listing_problems(manifest, remote, manifest_modified=None):
    """Differences between a manifest and the bucket listing, as ``[(relpath, reason)]``.

    ``remote``: relpath -> {size, etag, last_modified (epoch seconds)}. An object missing, of another
    size, with another ETag than recorded, or modified after the manifest was written is a problem.
    """
    problems = []
    for rel, entry in sorted(manifest["files"].items()):
        obj = remote.get(rel)
        if obj is None:
            problems.append((rel, "missing from the bucket"))
            continue
        if obj["size"] != entry["size"]:
            problems.append((rel, "size %d in the bucket, %d in the manifest" % (obj["size"], entry["size"])))
            continue
        if entry.get("etag") and obj.get("etag") and obj["etag"] != entry["etag"]:
            problems.append((rel, "object was rewritten after the manifest was written (ETag %s, manifest %s)"
                             % (obj["etag"], entry["etag"])))
            continue
        if (manifest_modified is not None and obj.get("last_modified") is not None
                and obj["last_modified"] > manifest_modified + 1):
            problems.append((rel, "object was modified after the manifest was written"))
    return problems


# --------------------------------------------------------------------------------------------
# Pure planning
# --------------------------------------------------------------------------------------------

def remote_sha256(rel, obj, manifest, head_sha=None):
    """The SHA-256 we know for a remote object, from the manifest (when the manifest entry still
    describes this very object: same size and ETag) or from its ``sha256`` metadata; else None."""
    if obj is None:
        return None
    entry = (manifest or {}).get("files", {}).get(rel) if manifest else None
    if entry and entry.get("size") == obj["size"] and entry.get("etag") and entry["etag"] == obj.get("etag"):
        return entry["sha256"]
    return head_sha


def needs_head(rel, obj, local_size, manifest):
    """True when the only way to learn a same-size object's SHA-256 is its metadata (HEAD)."""
    if obj is None or obj["size"] != local_size:
        return False
    return remote_sha256(rel, obj, manifest) is None


def push_reason(info, obj, known_sha):
    """Why a local file (``info``: size, sha256) must be uploaded over ``obj`` (listing entry or None)
    whose SHA-256 we know to be ``known_sha`` (or None); None when it is already there."""
    if obj is None:
        return "new"
    if obj["size"] != info["size"]:
        return "size changed (%d -> %d bytes)" % (obj["size"], info["size"])
    if known_sha is None:
        return "content unknown (no manifest entry or sha256 metadata)"
    if known_sha != info["sha256"]:
        return "content changed (sha256 differs)"
    return None


def plan_push(local, remote, manifest, delete_extra=False, include=None, exclude=None, head_shas=None):
    """Decide what a push does.

    ``local``: relpath -> {size, sha256}; ``remote``: relpath -> {size, etag, last_modified} (the
    listing, manifest excluded); ``manifest``: the parsed manifest or None; ``head_shas``: relpath ->
    sha256 from object metadata for objects needing it. Returns a dict with ``upload`` [(relpath,
    reason)], ``skip`` [relpath], ``delete`` [relpath], and ``files`` (the manifest files map, etags
    of skipped objects filled in).
    """
    head_shas = head_shas or {}
    upload, skip, files = [], [], {}
    for rel in sorted(local):
        info = local[rel]
        obj = remote.get(rel)
        files[rel] = {"size": info["size"], "sha256": info["sha256"], "etag": None}
        reason = push_reason(info, obj, remote_sha256(rel, obj, manifest, head_shas.get(rel)))
        if reason:
            upload.append((rel, reason))
        else:
            skip.append(rel)
            files[rel]["etag"] = obj.get("etag")
    delete = []
    if delete_extra:
        delete = sorted(rel for rel in remote if rel not in local and path_selected(rel, include, exclude))
    return {"upload": upload, "skip": skip, "delete": delete, "files": files}


def plan_pull(manifest_files, local, local_shas, delete_extra=False, local_extra=None):
    """Decide what a pull does. ``manifest_files``: relpath -> {size, sha256}; ``local``: relpath ->
    size for existing files; ``local_shas``: relpath -> sha256 of existing same-size files."""
    download, skip = [], []
    for rel in sorted(manifest_files):
        entry = manifest_files[rel]
        size = local.get(rel)
        if size is None:
            download.append((rel, "missing locally"))
        elif size != entry["size"]:
            download.append((rel, "local size %d, manifest %d" % (size, entry["size"])))
        elif local_shas.get(rel) != entry["sha256"]:
            download.append((rel, "local content differs (sha256)"))
        else:
            skip.append(rel)
    delete = sorted(local_extra or []) if delete_extra else []
    return {"download": download, "skip": skip, "delete": delete}


def resume_parts(expected, listed, journal_etags):
    """Which parts of an interrupted multipart upload can be kept.

    ``expected``: [(number, offset, length)]; ``listed``: number -> {size, etag} from list_parts;
    ``journal_etags``: number -> the ETag the server answered when it accepted our part (after checking
    the part against the SHA-256 signed into the request). A part is kept only when the server still
    lists that very part: same size, same ETag. Anything else is sent again.
    Returns (kept: number -> etag, missing: [(number, offset, length)]).
    """
    kept, missing = {}, []
    for number, offset, length in expected:
        part = listed.get(number)
        accepted = _etag(journal_etags.get(number))
        if part is not None and accepted and part["size"] == length and _etag(part["etag"]) == accepted:
            kept[number] = part["etag"]
        else:
            missing.append((number, offset, length))
    return kept, missing


def partial_names(rel, size, sha256):
    """(data file, progress log) names of a pull's partial download of ``rel``, in the directory of
    ``rel``. They derive from the path, size and manifest SHA-256 of the file, so a re-run of the same
    pull finds them and a new version of the file (new manifest entry) gets other names."""
    ident = hashlib.sha256(("%s\0%d\0%s" % (rel, size, sha256)).encode("utf-8")).hexdigest()[:16]
    stem = ".%s.%s" % (rel.split("/")[-1][:PARTIAL_NAME_KEEP], ident)
    return stem + PARTIAL_SUFFIX, stem + PROGRESS_SUFFIX


def progress_header(key, size, sha256, etag):
    """The first line of a progress log: the object its bytes come from. A partial file is reused only
    while all of it still matches (same key, size, manifest SHA-256 and ETag)."""
    return {"format": PROGRESS_FORMAT, "version": 1, "key": key, "size": size, "sha256": sha256, "etag": etag}


def merge_intervals(intervals):
    """Sorted, merged ``[(start, end)]`` (end exclusive); touching intervals are joined."""
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def parse_progress(text, expected):
    """``(intervals, reason)`` from a progress log's text, written for ``expected`` (a
    ``progress_header``). ``reason`` is None when the partial file can be reused, with the merged byte
    ranges it holds; else it says why the partial file must be discarded (and intervals is empty).
    The log is append-only: a torn last line (power loss) is ignored, and a torn number is a smaller
    number, so it never claims bytes that were not written."""
    lines = text.split("\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        return [], "its progress log is unreadable"
    if not isinstance(header, dict) or header.get("format") != PROGRESS_FORMAT or header.get("version") != 1:
        return [], "its progress log has another format"
    for field in ("key", "size", "sha256", "etag"):
        if header.get(field) != expected[field]:
            return [], "the object changed (%s %r, now %r)" % (field, header.get(field), expected[field])
    intervals = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit():
            continue
        start, end = int(fields[0]), int(fields[1])
        if 0 <= start < end <= expected["size"]:
            intervals.append((start, end))
    return merge_intervals(intervals), None


def covered_prefix(intervals, offset, length):
    """How many bytes of ``[offset, offset + length)``, counted from ``offset`` without a gap, the
    merged ``intervals`` hold."""
    for start, end in intervals:
        if start <= offset < end:
            return min(end, offset + length) - offset
    return 0


def resume_ranges(ranges, intervals):
    """``[(offset still to fetch, length still to fetch)]`` per range of ``ranges`` [(number, offset,
    length)], given the byte ranges ``intervals`` already on disk. A request writes its range from the
    start, so what a range holds is a prefix of it; only the rest is fetched."""
    out = []
    for _number, offset, length in ranges:
        kept = covered_prefix(intervals, offset, length)
        out.append((offset + kept, length - kept))
    return out


def dead_partials(found, live):
    """The partial download files among ``found`` (paths) that no current download uses: leftovers of
    runs that died (or of another version of the files) to remove, unless a live run holds them."""
    return sorted(path for path in found if path.endswith(PARTIAL_SUFFIX) and path not in live)


def render_diff(before_files, after_files):
    """Ansible diff dict: one line per file, ``relpath size sha256``."""
    def lines(files):
        return "".join("%s %d %s\n" % (rel, f["size"], f.get("sha256") or "?") for rel, f in sorted(files.items()))
    return {"before": lines(before_files), "after": lines(after_files)}


def mib_per_second(nbytes, seconds):
    return round(nbytes / (1024.0 * 1024.0) / seconds, 1) if seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Local files: scan, hash (cached), journal
# --------------------------------------------------------------------------------------------

def scan_local_dir(root, include, exclude):
    """relpath -> stat result for the regular files under ``root`` selected by the filters."""
    found = {}
    root = os.path.abspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if not path_selected(rel, include, exclude):
                continue
            try:
                st = os.stat(full)
            except OSError as exc:
                raise StageError("cannot read %s: %s" % (full, exc.strerror or exc)) from None
            if not _is_regular(st):
                continue
            found[rel] = st
    return found


def _is_regular(st):
    import stat as stat_mod

    return stat_mod.S_ISREG(st.st_mode)


def sha256_file(path, chunk=HASH_CHUNK):
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def stat_key(st):
    """What must stay equal for a cached hash to be reused. ctime changes on every write and on
    utime(), so a file rewritten with its old size and mtime restored is still re-hashed."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def current_boot_id():
    """Linux boot id (changes on every boot), or None where the kernel does not expose one."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


class HashCache(object):
    """SHA-256 per absolute path, reused only while size, mtime, ctime, inode and device match."""

    def __init__(self, path):
        self.path = path
        self.entries = {}
        self.lock = threading.Lock()
        self.dirty = False
        self.hits = 0
        self.misses = 0
        if path and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    data = json.load(handle)
                if isinstance(data, dict) and data.get("version") == 1:
                    self.entries = data.get("entries", {})
            except (OSError, ValueError):
                self.entries = {}

    def lookup(self, path, st):
        entry = self.entries.get(path)
        if not entry or entry.get("stat") != stat_key(st):
            return None
        if entry.get("boot_id") and entry["boot_id"] != current_boot_id():
            return None
        return entry.get("sha256")

    def store(self, path, st, sha, volatile=False):
        """Remember ``sha`` for ``path``. ``volatile``: the bytes may still be only in the page cache
        (written without fsync), so the entry holds only until the next reboot."""
        entry = {"stat": stat_key(st), "sha256": sha}
        if volatile:
            boot_id = current_boot_id()
            if not boot_id:
                return
            entry["boot_id"] = boot_id
        with self.lock:
            self.entries[path] = entry
            self.dirty = True

    def hash(self, path, st):
        """SHA-256 of ``path`` (stat ``st``), from the cache when still valid."""
        cached = self.lookup(path, st)
        if cached:
            self.hits += 1
            return cached
        self.misses += 1
        sha = sha256_file(path)
        after = os.stat(path)
        if stat_key(after) != stat_key(st):
            raise StageError("%s changed while it was being hashed: stop writing to it and re-run" % path)
        self.store(path, st, sha)
        return sha

    def save(self):
        if not self.path or not self.dirty:
            return
        _atomic_write_json(self.path, {"version": 1, "entries": self.entries})
        self.dirty = False


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


def hash_files(paths_stats, cache, workers):
    """relpath -> sha256 for ``paths_stats`` (relpath -> (abs path, stat)); hashing runs in threads
    (hashlib releases the GIL on large buffers)."""
    results = {}
    items = sorted(paths_stats.items(), key=lambda kv: -kv[1][1].st_size)
    if not items:
        return results
    workers = max(1, min(workers, os.cpu_count() or 1, len(items)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = dict((rel, pool.submit(cache.hash, path, st)) for rel, (path, st) in items)
        for rel, fut in futures.items():
            results[rel] = fut.result()
    return results


def hash_files_iter(paths_stats, cache, workers):
    """Yield (relpath, sha256) as hashes complete, largest files first, in ``workers`` threads."""
    items = sorted(paths_stats.items(), key=lambda kv: (-kv[1][1].st_size, kv[0]))
    if not items:
        return
    workers = max(1, min(workers, os.cpu_count() or 1, len(items)))
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {}
    try:
        futures = dict((pool.submit(cache.hash, path, st), rel) for rel, (path, st) in items)
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True)


class UploadJournal(object):
    """Local record of our multipart uploads: which upload id holds which file content (SHA-256,
    size, part size) and the ETag of every part the server accepted. It is what lets a re-run trust
    the parts an interrupted run left behind."""

    def __init__(self, directory):
        self.directory = directory
        self.lock = threading.Lock()

    def _path(self, bucket, key):
        name = hashlib.sha256(("%s\0%s" % (bucket, key)).encode("utf-8")).hexdigest()[:32]
        return os.path.join(self.directory, name + ".json") if self.directory else None

    def load(self, bucket, key):
        path = self._path(bucket, key)
        if not path or not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        if data.get("bucket") != bucket or data.get("key") != key:
            return None
        return data

    def start(self, bucket, key, upload_id, sha256, size, part_size):
        self.save({"bucket": bucket, "key": key, "upload_id": upload_id, "sha256": sha256, "size": size,
                   "part_size": part_size, "parts": {}})

    def save(self, data):
        path = self._path(data["bucket"], data["key"])
        if path:
            with self.lock:
                _atomic_write_json(path, data)

    def forget(self, bucket, key):
        path = self._path(bucket, key)
        if path and os.path.exists(path):
            os.unlink(path)


def _try_lock(fd):
    """Exclusive flock on ``fd`` without waiting: BlockingIOError when another process holds it. A
    file system without flock (some network mounts answer ENOLCK) gets no lock: the pull still runs."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def _open_locked(path, flags):
    """Open ``path`` (created 0600 when missing) and take an exclusive flock without waiting:
    BlockingIOError when a live process holds it. A file unlinked between the open and the lock (by a
    run removing debris) is opened again."""
    for _attempt in range(5):
        fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            _try_lock(fd)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise StageError("cannot lock %s: it keeps being replaced by another process; stop it and re-run" % path)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class PartialDownload(object):
    """A file being pulled: its partial data file and progress log (names from ``partial_names``), both
    locked (flock) while this run uses them, so another run neither writes them nor removes them as
    debris; a lock dies with its process, which is how a dead run's files are told apart.

    ``open`` keeps the byte ranges a previous run recorded when the log was written for the same
    object (``progress_header``) and the data file has the right size; anything else is discarded
    (``discarded`` says why) and the download starts from zero. ``mark`` records a range as on disk:
    fdatasync of the data first, then one line appended to the log (O_DSYNC), so the log never names
    bytes a crash could lose."""

    def __init__(self, directory, rel, key, size, sha256, etag):
        data_name, log_name = partial_names(rel, size, sha256)
        self.path = os.path.join(directory, data_name)
        self.log_path = os.path.join(directory, log_name)
        self.rel = rel
        self.size = size
        self.expected = progress_header(key, size, sha256, etag)
        self.fd = None
        self.log_fd = None
        self.intervals = []
        self.discarded = None

    def open(self):
        try:
            self.fd = _open_locked(self.path, os.O_RDWR)
            self.log_fd = _open_locked(self.log_path, os.O_RDWR | os.O_APPEND | getattr(os, "O_DSYNC", 0))
        except BlockingIOError:
            self.close()
            raise StageError("another pull is downloading %s into the same directory right now (%s is locked by "
                             "a running process): wait for it to finish, or stop it and re-run"
                             % (self.rel, self.path)) from None
        except BaseException:
            self.close()
            raise
        raw = os.pread(self.log_fd, os.fstat(self.log_fd).st_size, 0)
        size = os.fstat(self.fd).st_size
        if raw:
            intervals, reason = parse_progress(raw.decode("utf-8", "replace"), self.expected)
            if reason is None and size != self.size:
                intervals, reason = [], "it has %d bytes, not %d" % (size, self.size)
        else:
            intervals, reason = [], "it has no progress log" if size else None
        if reason is not None or not raw:
            self.discarded = reason
            self.reset()
        else:
            self.intervals = intervals
        return self

    def kept_bytes(self):
        return sum(end - start for start, end in self.intervals)

    def reset(self):
        """Start over: a log that names no byte first, then an empty (sparse) data file."""
        os.ftruncate(self.log_fd, 0)
        self._log((json.dumps(self.expected, sort_keys=True) + "\n").encode("utf-8"))
        os.ftruncate(self.fd, 0)
        if self.size:
            os.ftruncate(self.fd, self.size)
        self.intervals = []

    def _log(self, data):
        _write_all(self.log_fd, data)
        if not getattr(os, "O_DSYNC", 0):
            os.fsync(self.log_fd)

    def mark(self, start, end):
        """Record that bytes ``[start, end)`` are in the data file."""
        if end > start:
            os.fdatasync(self.fd)
            self._log(("%d %d\n" % (start, end)).encode("ascii"))

    def publish(self, final):
        """Rename the (verified) data file to ``final`` and drop the log."""
        os.replace(self.path, final)
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass
        self.close()

    def discard(self):
        for path in (self.path, self.log_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.close()

    def close(self):
        for name in ("fd", "log_fd"):
            if getattr(self, name) is not None:
                os.close(getattr(self, name))
                setattr(self, name, None)


def resumable_bytes(directory, rel, key, size, sha256, etag):
    """Bytes a pull of ``rel`` would keep from a partial download in ``directory`` (read only, no
    lock: what check mode reports)."""
    data_name, log_name = partial_names(rel, size, sha256)
    try:
        if os.stat(os.path.join(directory, data_name)).st_size != size:
            return 0
        with open(os.path.join(directory, log_name), "rb") as handle:
            raw = handle.read()
    except OSError:
        return 0
    intervals, reason = parse_progress(raw.decode("utf-8", "replace"), progress_header(key, size, sha256, etag))
    return 0 if reason else sum(end - start for start, end in intervals)


def remove_dead_partials(root, live):
    """Remove the ``*.llmops-partial`` files under ``root`` that are not in ``live`` (paths this run uses)
    and that no running process holds locked. Returns (files removed, bytes freed)."""
    found = []
    for dirpath, _dirs, names in os.walk(root):
        found.extend(os.path.join(dirpath, name) for name in names if name.endswith(PARTIAL_SUFFIX))
    removed = freed = 0
    for path in dead_partials(found, live):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            _try_lock(fd)
            st = os.fstat(fd)
            if os.stat(path).st_ino == st.st_ino:
                os.unlink(path)
                removed += 1
                freed += st.st_blocks * 512
        except (BlockingIOError, FileNotFoundError):
            pass  # held by a live run, or removed meanwhile
        finally:
            os.close(fd)
    return removed, freed


# --------------------------------------------------------------------------------------------
# S3 reads used by planning: one paginated listing plus the manifest
# --------------------------------------------------------------------------------------------

def _epoch(value):
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return value.timestamp()
    return float(value)


def list_prefix(client, bucket, prefix):
    """relpath -> {size, etag, last_modified} for every object under ``prefix`` (one paginated listing)."""
    found = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            key = obj["Key"]
            if key.endswith("/"):
                continue
            found[key[len(prefix):]] = {
                "size": int(obj["Size"]),
                "etag": (obj.get("ETag") or "").strip('"') or None,
                "last_modified": _epoch(obj.get("LastModified")),
            }
    return found


def read_manifest(client, bucket, key):
    resp = client.get_object(Bucket=bucket, Key=key)
    return parse_manifest(resp["Body"].read(), "s3://%s/%s" % (bucket, key))


def _etag(value):
    return (value or "").strip('"').lower() or None


# --------------------------------------------------------------------------------------------
# Transfers
# --------------------------------------------------------------------------------------------

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


class _CancelledError(Exception):
    pass


def _hash_range(fd, offset, length, digest, buf):
    """Feed ``length`` bytes of ``fd`` from ``offset`` to ``digest`` through the reused ``buf``."""
    view = memoryview(buf)
    end = offset + length
    pos = offset
    while pos < end:
        want = min(len(buf), end - pos)
        got = os.preadv(fd, [view[:want]], pos)
        if not got:
            raise StageError("short read while hashing a downloaded file")
        digest.update(view[:got])
        pos += got


def body_reader(body):
    """A ``readinto(buffer)`` for a botocore streaming body.

    The HTTP response under botocore's ``StreamingBody`` (urllib3 over ``http.client``) can read the
    socket straight into our buffer; botocore and urllib3 would instead allocate a new bytes object
    per chunk and copy it once or twice. botocore asks urllib3 not to decode content, so the raw
    ``http.client`` stream carries exactly the object's bytes. Anything else falls back to ``read``.
    """
    raw = getattr(body, "_raw_stream", None)
    inner = getattr(raw, "_fp", None)
    readinto = getattr(inner, "readinto", None)
    if (readinto is not None and getattr(raw, "_fp_bytes_read", 0) == 0
            and not getattr(raw, "_decoder", None) and not getattr(raw, "chunked", False)):
        return readinto

    def fallback(view):
        data = body.read(len(view))
        view[:len(data)] = data
        return len(data)
    return fallback


class PartBody(object):
    """A part of a file held in a worker's reused buffer, as the request body of an upload.

    ``read`` hands out memoryview slices of the buffer: botocore feeds them to SHA-256 for the SigV4
    payload hash and urllib3 passes them to the socket, so the part is not copied again in user
    space (bytes bodies are wrapped in a BytesIO by botocore and copied chunk by chunk, twice).
    ``seek``/``tell``/``len`` let botocore size the body and rewind it for a retry.

    A read hands out at least ``SEND_CHUNK`` bytes (or the rest): urllib3 asks for 16 KiB blocks
    (``blocksize`` of urllib3.connection.HTTPConnection), which is 4096 trips through Python, each
    taking the GIL, per 64 MiB part; with many parts in flight the sending threads queue for the GIL
    instead of the socket. Its callers (urllib3's body_to_chunks, botocore's payload hash) send or
    hash whatever length they get."""

    def __init__(self, view):
        self._view = view
        self._pos = 0

    def __len__(self):
        return len(self._view)

    def read(self, size=-1):
        if size is not None and 0 <= size < SEND_CHUNK:
            size = SEND_CHUNK
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = self._view[self._pos:end]
        self._pos = end
        return chunk

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._pos, 2: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self):
        return self._pos


def read_part(fd, view, offset):
    """Fill ``view`` from ``fd`` at ``offset``; returns the bytes read (fewer at end of file)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if not got:
            break
        done += got
    return done


class _SpliceUnsupportedError(Exception):
    """splice(2) refused the socket before any byte of it moved: read the rest of the body through
    the buffer. ``done`` bytes (what http.client had buffered) are already written."""

    def __init__(self, done):
        super(_SpliceUnsupportedError, self).__init__(done)
        self.done = done


def splice_target(body, endpoint_url):
    """The ``http.client`` response under ``body`` when its bytes can be spliced from the socket:
    Linux with ``os.splice``, a plain-HTTP endpoint (TLS must be decrypted in user space), a response
    with a known length that nobody has read from. None otherwise."""
    if getattr(os, "splice", None) is None or not (endpoint_url or "").lower().startswith("http://"):
        return None
    raw = getattr(body, "_raw_stream", None)
    inner = getattr(raw, "_fp", None)
    if (inner is None or getattr(raw, "_fp_bytes_read", 0) != 0 or getattr(raw, "_decoder", None)
            or getattr(raw, "chunked", False) or getattr(inner, "chunked", False)
            or not isinstance(getattr(inner, "length", None), int) or getattr(inner, "fp", None) is None):
        return None
    return inner


def _wait_readable(fileno, timeout, what):
    poller = select.poll()
    poller.register(fileno, select.POLLIN)
    if not poller.poll(timeout * 1000.0):
        raise StageError("no data for %s s while %s (read timeout); check that the server is running and the network"
                         % (timeout, what))


def splice_body(inner, fd, pos, length, buf, timeout, cancel, what):
    """Move the next ``length`` bytes of the HTTP response ``inner`` into ``fd`` at ``pos``: the
    bytes ``http.client`` already buffered through ``buf``, the rest socket -> pipe -> file with
    splice(2). Returns the number of bytes written (fewer when the connection ended early); leaves
    the response fully read (or closed on error) so the connection can be released.
    Raises _SpliceUnsupportedError when the kernel refuses to splice from the socket at all."""
    view = memoryview(buf)
    done = 0
    buffered = len(inner.fp.peek(1)) if length else 0
    while done < min(buffered, length):
        got = inner.readinto(view[:min(len(view), buffered - done, length - done)])
        if not got:
            return done
        written = 0
        while written < got:
            written += os.pwrite(fd, view[written:got], pos + done + written)
        done += got
    if done == length:
        return done
    sock = inner.fileno()
    pipe_r, pipe_w = os.pipe()
    spliced = 0
    try:
        try:
            import fcntl
            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, SPLICE_CHUNK)
        except (ImportError, OSError):
            pass  # the default pipe size (64 KiB) works, with more system calls
        while done < length:
            if cancel.is_set():
                raise _CancelledError()
            try:
                got = os.splice(sock, pipe_w, min(SPLICE_CHUNK, length - done))
            except BlockingIOError:
                _wait_readable(sock, timeout, what)
                continue
            except OSError as exc:
                if spliced == 0 and exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise _SpliceUnsupportedError(done) from None
                raise
            if not got:
                break
            left = got
            while left:
                try:
                    moved = os.splice(pipe_r, fd, left, offset_dst=pos + done)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    # the file system takes no splice: copy what sits in the pipe through the buffer
                    moved = os.readv(pipe_r, [view[:min(len(view), left)]])
                    written = 0
                    while written < moved:
                        written += os.pwrite(fd, view[written:moved], pos + done + written)
                done += moved
                spliced += moved
                left -= moved
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
        if spliced:
            # http.client did not see these bytes: account for them so that it hands the connection
            # back (complete body) or closes it (short body), as after its own reads
            inner.length = max(inner.length - spliced, 0)
            if inner.length == 0:
                inner.read()
    return done


def release_body(body):
    """Give a fully read body's connection back to the pool (urllib3 does that itself only when it
    did the reading); a body not read to its end is closed with its connection."""
    raw = getattr(body, "_raw_stream", None)
    inner = getattr(raw, "_fp", None)
    if inner is not None and hasattr(raw, "release_conn") and getattr(inner, "isclosed", lambda: False)():
        raw.release_conn()
    else:
        body.close()


class OrderedHasher(object):
    """SHA-256 of a file written out of order: parts are hashed in order as they complete, by
    whichever worker finishes the part that extends the hashed prefix (reading it back from the
    page cache), so hashing overlaps the download instead of following it."""

    def __init__(self, fd, ranges):
        self.fd = fd
        self.ranges = ranges
        self.digest = hashlib.sha256()
        self.done = set()
        self.next_index = 0
        self.state = threading.Lock()
        self.hashing = threading.Lock()

    def part_done(self, index):
        with self.state:
            self.done.add(index)
        while True:
            if not self.hashing.acquire(False):
                return
            try:
                buf = None
                while True:
                    with self.state:
                        if self.next_index not in self.done:
                            break
                        index_now = self.next_index
                    _number, offset, length = self.ranges[index_now]
                    if buf is None:
                        buf = bytearray(min(REHASH_CHUNK, max(length, 1)))
                    _hash_range(self.fd, offset, length, self.digest, buf)
                    with self.state:
                        self.next_index += 1
            finally:
                self.hashing.release()
            with self.state:
                if self.next_index not in self.done:
                    return

    def complete(self):
        return self.next_index == len(self.ranges)

    def hexdigest(self):
        return self.digest.hexdigest()


class TransferEngine(object):
    """Runs parts of many files on one bounded thread pool.

    Memory stays bounded: a worker holds at most one part (uploads) or its reused 128 KiB buffer
    (downloads), so peak buffers are ``concurrency * part_size`` for pushes and ``concurrency * 128 KiB``
    for pulls (plus a 1 MiB kernel pipe per GET in flight when splicing). Downloads are ranged GETs of
    ``part_size`` (several parts of one file in flight), spliced or pwritten into a preallocated
    temporary file and hashed in order as contiguous parts complete.
    """

    def __init__(self, client, bucket, concurrency, part_size, endpoint_url=None, journal=None):
        self.client = client
        self.bucket = bucket
        self.concurrency = concurrency
        self.part_size = part_size
        self.endpoint_url = endpoint_url
        self.journal = journal
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.bytes_resumed = 0
        self.parts_resumed = 0
        self.errors = []
        self.open_uploads = {}
        self.pool = None
        self.futures = []
        self.etags = {}
        self.local = threading.local()
        self.splice = True
        config = getattr(getattr(client, "meta", None), "config", None)
        self.read_timeout = getattr(config, "read_timeout", None) or 60

    def _buffer(self):
        """This worker thread's download buffer (one per thread, reused for every part)."""
        buf = getattr(self.local, "buffer", None)
        if buf is None:
            buf = self.local.buffer = bytearray(DOWNLOAD_CHUNK)
        return buf

    def _part_buffer(self, size):
        """This worker thread's upload buffer of at least ``size`` bytes, reused for every part (a new
        64 MiB allocation per part costs page faults on every page)."""
        buf = getattr(self.local, "part", None)
        if buf is None or len(buf) < size:
            buf = self.local.part = None
            buf = self.local.part = bytearray(size)
        return buf

    # ---- errors -------------------------------------------------------------------------------
    def _fail(self, exc, action):
        if isinstance(exc, _CancelledError):
            return
        with self.lock:
            if isinstance(exc, StageError):
                self.errors.append(exc.message)
            else:
                self.errors.append(describe_s3_error(exc, self.endpoint_url, self.bucket, action))
        self.cancel.set()

    def _check(self):
        if self.cancel.is_set():
            raise _CancelledError()

    def _run(self, tasks):
        """Run callables on the pool; raise StageError with the first failure."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(task) for task in tasks]
            for fut in futures:
                fut.result()
        if self.errors:
            raise StageError(self.errors[0], errors=self.errors)

    # ---- uploads ------------------------------------------------------------------------------
    def upload(self, items, prefix, resume=True):
        """Upload ``items`` [(relpath, abs path, size, sha256)]; return relpath -> etag."""
        self.start_uploads(prefix, resume)
        try:
            for item in items:
                self.submit_upload(*item)
        except StageError:
            pass  # already recorded and cancelling: finish_uploads raises it once in-flight parts stop
        return self.finish_uploads()

    def start_uploads(self, prefix, resume=True):
        """Open the pool for ``submit_upload`` calls made while planning continues (pipelining:
        files start moving as soon as their hash says they must)."""
        self.upload_prefix = prefix
        self.upload_resume = resume
        self.etags = {}
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency)
        self.futures = []

    def submit_upload(self, rel, path, size, sha):
        if self.cancel.is_set():
            return
        key = object_key(self.upload_prefix, rel)
        psize = part_size_for(size, self.part_size)
        if not uses_multipart(size, psize):
            tasks = [self._put_task(rel, key, path, size, sha, self.etags)]
        else:
            tasks = self._multipart_tasks(rel, key, path, size, sha, psize, self.etags, self.upload_resume)
        self.futures.extend(self.pool.submit(task) for task in tasks)

    def finish_uploads(self):
        """Wait for every submitted upload; return relpath -> etag or raise the first failure."""
        try:
            for fut in self.futures:
                fut.result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
        if self.errors:
            raise StageError(self.errors[0], errors=self.errors)
        return self.etags

    def _put_task(self, rel, key, path, size, sha, etags):
        def task():
            try:
                self._check()
                with open(path, "rb") as handle:
                    data = handle.read()
                if len(data) != size:
                    raise StageError("%s changed size during the push: stop writing to it and re-run" % path)
                resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                              Metadata={"sha256": sha})
                with self.lock:
                    etags[rel] = (resp.get("ETag") or "").strip('"')
                    self.bytes_sent += size
            except Exception as exc:  # noqa: BLE001 - reported through _fail
                self._fail(exc, "uploading %s" % key)
        return task

    def _pending_uploads(self, key):
        """Upload ids in progress for exactly ``key``. MinIO lists uploads only for an exact object
        name (a directory prefix answers nothing after a restart), so this is asked per key."""
        ids = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for upload in page.get("Uploads", []) or []:
                if upload["Key"] == key:
                    ids.append(upload["UploadId"])
        return ids

    def _listed_parts(self, key, upload_id):
        """number -> {size, etag} of an upload's parts, or None when the upload no longer exists."""
        listed = {}
        paginator = self.client.get_paginator("list_parts")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []) or []:
                    listed[int(part["PartNumber"])] = {"size": int(part["Size"]), "etag": part["ETag"]}
        except ClientError as exc:
            if error_code(exc) in ("NoSuchUpload", "404"):
                return None
            raise
        return listed

    def _start_multipart(self, key, sha, size, psize, resume):
        """(upload_id, kept parts {number: etag}, journal, ranges) for ``key``: resumes the journaled
        upload of the same content when it still exists (keeping the parts it accepted),
        aborts other leftovers for the key, else starts a new upload."""
        ranges = part_ranges(size, psize)
        journal = self.journal.load(self.bucket, key) if self.journal else None
        pending = self._pending_uploads(key)
        kept = {}
        upload_id = None
        if (resume and journal and journal.get("sha256") == sha and journal.get("size") == size
                and journal.get("part_size") == psize):
            listed = self._listed_parts(key, journal["upload_id"])
            if listed is not None:
                upload_id = journal["upload_id"]
                accepted = dict((int(k), v) for k, v in (journal.get("parts") or {}).items())
                kept, _missing = resume_parts(ranges, listed, accepted)
                journal["parts"] = dict((str(n), accepted[n]) for n in kept)
        for other in pending:
            if other != upload_id:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=other)
                except ClientError as exc:
                    if error_code(exc) not in ("NoSuchUpload", "404"):
                        raise
        if upload_id is None:
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata={"sha256": sha})
            upload_id = resp["UploadId"]
            journal = {"bucket": self.bucket, "key": key, "upload_id": upload_id, "sha256": sha, "size": size,
                       "part_size": psize, "parts": {}}
            if self.journal:
                self.journal.save(journal)
        return upload_id, kept, journal, ranges

    def _multipart_tasks(self, rel, key, path, size, sha, psize, etags, resume):
        try:
            upload_id, kept, journal, ranges = self._start_multipart(key, sha, size, psize, resume)
        except Exception as exc:  # noqa: BLE001 - worker thread: any failure is recorded by _fail and reported once as a named StageError
            self._fail(exc, "starting the multipart upload of %s" % key)
            raise StageError(self.errors[0] if self.errors else str(exc)) from None
        with self.lock:
            self.open_uploads[key] = upload_id
            for number, _offset, length in ranges:
                if number in kept:
                    self.parts_resumed += 1
                    self.bytes_resumed += length
        part_etags = dict(kept)
        remaining = [r for r in ranges if r[0] not in kept]
        state = {"left": len(remaining)}

        def finish():
            parts = [{"PartNumber": n, "ETag": part_etags[n]} for n in sorted(part_etags)]
            resp = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
            with self.lock:
                etags[rel] = (resp.get("ETag") or "").strip('"')
                self.open_uploads.pop(key, None)
            if self.journal:
                self.journal.forget(self.bucket, key)

        def make(number, offset, length):
            def task():
                try:
                    self._check()
                    view = memoryview(self._part_buffer(length))[:length]
                    try:
                        fd = os.open(path, os.O_RDONLY)
                        try:
                            got = read_part(fd, view, offset)
                        finally:
                            os.close(fd)
                        if got != length:
                            raise StageError("%s changed size during the push: stop writing to it and re-run" % path)
                        # The client signs the part's SHA-256 into the request (payload signing), so the
                        # server stores it only if the bytes arrived intact.
                        resp = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                       PartNumber=number, Body=PartBody(view))
                    finally:
                        view.release()
                    with self.lock:
                        part_etags[number] = resp["ETag"]
                        journal["parts"][str(number)] = resp["ETag"]
                        self.bytes_sent += length
                        state["left"] -= 1
                        last = state["left"] == 0
                    if self.journal:
                        self.journal.save(journal)
                    if last:
                        self._check()
                        finish()
                except Exception as exc:  # noqa: BLE001 - worker thread: any failure is recorded by _fail and reported once as a named StageError
                    self._fail(exc, "uploading part %d of %s" % (number, key))
            return task

        if not remaining:
            def complete_only():
                try:
                    self._check()
                    finish()
                except Exception as exc:  # noqa: BLE001 - worker thread: any failure is recorded by _fail and reported once as a named StageError
                    self._fail(exc, "completing the multipart upload of %s" % key)
            return [complete_only]
        return [make(n, o, ln) for n, o, ln in remaining]

    def abort_open_uploads(self):
        """Abort the multipart uploads this run left open (used when resume is off)."""
        for key, upload_id in list(self.open_uploads.items()):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001,S110 - best effort cleanup after a failure already reported
                pass
            if self.journal:
                self.journal.forget(self.bucket, key)

    # ---- downloads ----------------------------------------------------------------------------
    def download(self, items, prefix, dest, before_rename=None):
        """Download ``items`` [(relpath, size, sha256, etag)] into ``dest`` through partial files
        (``PartialDownload``: what an interrupted run left is kept and only the missing byte ranges
        are fetched), verify each against its SHA-256, then rename into place. ``before_rename`` is
        called once, after every file was verified and before the first rename (the pull removes its
        old local manifest there). A file whose resumed bytes fail the check is fetched again from
        zero, once; one that fails without resumed bytes is an error. On failure the partial files
        stay for the next run. Returns relpath -> final path."""
        files = []
        try:
            for rel, size, sha, etag in items:
                final = os.path.join(dest, *rel.split("/"))
                directory = os.path.dirname(final)
                if not os.path.isdir(directory):
                    os.makedirs(directory, exist_ok=True)
                partial = PartialDownload(directory, rel, object_key(prefix, rel), size, sha, etag)
                files.append({"rel": rel, "key": partial.expected["key"], "size": size, "sha": sha, "etag": etag,
                              "final": final, "partial": partial})
                try:
                    partial.open()
                except OSError as exc:
                    raise StageError("cannot write the partial file %s (%s): dest must be a writable directory "
                                     "with room for the model" % (partial.path, exc.strerror or exc)) from None
            self._fetch(files)
            retry = []
            for record in files:
                got = record["hasher"].hexdigest()
                if got == record["sha"]:
                    continue
                if not record["resumed"]:
                    record["partial"].discard()
                    raise StageError("s3://%s/%s does not match the manifest: sha256 %s, manifest %s (the object "
                                     "was changed or corrupted after staging; re-run mode=push from the source)"
                                     % (self.bucket, record["key"], got, record["sha"]), path=record["rel"])
                # the bytes kept from an earlier run were not what it recorded: fetch it all again
                record["partial"].reset()
                with self.lock:
                    self.bytes_resumed -= record["resumed"]
                retry.append(record)
            if retry:
                self._fetch(retry)
                for record in retry:
                    got = record["hasher"].hexdigest()
                    if got != record["sha"]:
                        record["partial"].discard()
                        raise StageError("s3://%s/%s does not match the manifest: sha256 %s, manifest %s (the "
                                         "object was changed or corrupted after staging; re-run mode=push from the "
                                         "source)" % (self.bucket, record["key"], got, record["sha"]),
                                         path=record["rel"])
            if before_rename is not None:
                before_rename()
            done = {}
            for record in files:
                record["partial"].publish(record["final"])
                done[record["rel"]] = record["final"]
            return done
        finally:
            for record in files:
                record["partial"].close()

    def _fetch(self, files):
        """Fetch what the partial files of ``files`` lack, ranges of all files interleaved on the pool,
        each file hashed in order as its ranges complete (``record['hasher']``)."""
        tasks = []
        for record in files:
            partial = record["partial"]
            ranges = part_ranges(record["size"], self.part_size)
            todo = resume_ranges(ranges, partial.intervals)
            record["hasher"] = OrderedHasher(partial.fd, ranges)
            record["fd"] = partial.fd
            kept = [length - todo[index][1] for index, (_number, _offset, length) in enumerate(ranges)]
            record["resumed"] = sum(kept)
            with self.lock:
                self.bytes_resumed += record["resumed"]
                self.parts_resumed += sum(1 for index, (_n, _o, length) in enumerate(ranges)
                                          if length and kept[index] == length)
            whole = len(ranges) == 1 and not record["resumed"]
            tasks.append([self._get_task(record, index, at, left, whole)
                          for index, (at, left) in enumerate(todo)])
        self._run(interleave(tasks))
        for record in files:
            if not record["hasher"].complete():
                raise StageError("internal error: %s was not hashed completely" % record["rel"])

    def _receive(self, record, body, offset, length):
        """Write the body of a GET of ``length`` bytes at ``offset`` into the record's partial file,
        recording progress (``PartialDownload.mark``) every PULL_CHECKPOINT bytes, at the end, and for
        whatever arrived before a failure; returns the end position reached (short when the connection
        ended early)."""
        partial = record["partial"]
        progress = {"pos": offset, "marked": offset}

        def advance(pos):
            progress["pos"] = pos
            if pos - progress["marked"] >= PULL_CHECKPOINT:
                partial.mark(progress["marked"], pos)
                progress["marked"] = pos

        try:
            self._receive_into(record, body, offset, length, advance)
        except BaseException:
            try:
                partial.mark(progress["marked"], progress["pos"])
            except OSError:
                pass  # the first failure is the one to report; unrecorded bytes are fetched again
            raise
        partial.mark(progress["marked"], progress["pos"])
        return progress["pos"]

    def _receive_into(self, record, body, offset, length, advance):
        """The body's bytes into the file at ``offset``; ``advance(pos)`` after each write."""
        buf = self._buffer()
        inner = splice_target(body, self.endpoint_url) if self.splice else None
        pos = offset
        if inner is not None:
            if inner.length > length:
                body.close()
                raise StageError("s3://%s/%s returned more bytes than its listed size" % (self.bucket, record["key"]))
            what = "downloading %s (endpoint %s, bucket %r)" % (record["key"], self.endpoint_url, self.bucket)
            # a body shorter than asked (Content-Length) ends there; the caller reports the gap
            end = offset + min(length, inner.length)
            try:
                while pos < end:
                    window = min(PULL_CHECKPOINT, end - pos)
                    got = splice_body(inner, record["fd"], pos, window, buf, self.read_timeout, self.cancel, what)
                    pos += got
                    advance(pos)
                    if got < window:
                        break
                return
            except _SpliceUnsupportedError as exc:
                self.splice = False  # this kernel or socket takes no splice: the buffer path from now on
                pos += exc.done
                advance(pos)
            except BaseException:
                body.close()
                raise
        readinto = body_reader(body)
        view = memoryview(buf)
        end = offset + length
        while True:
            got = readinto(view)
            if not got:
                break
            if pos + got > end:
                raise StageError("s3://%s/%s returned more bytes than its listed size"
                                 % (self.bucket, record["key"]))
            written = 0
            while written < got:
                written += os.pwrite(record["fd"], view[written:got], pos + written)
            pos += got
            advance(pos)
            if self.cancel.is_set():
                body.close()
                raise _CancelledError()

    def _get_task(self, record, index, offset, length, whole):
        def task():
            try:
                self._check()
                if length:
                    kwargs = {"Bucket": self.bucket, "Key": record["key"]}
                    if record["etag"]:
                        kwargs["IfMatch"] = '"%s"' % record["etag"]
                    if not whole:
                        kwargs["Range"] = "bytes=%d-%d" % (offset, offset + length - 1)
                    resp = self.client.get_object(**kwargs)
                    body = resp["Body"]
                    pos = self._receive(record, body, offset, length)
                    release_body(body)
                    if pos != offset + length:
                        # the GET is conditional on the listed ETag (a replaced object answers 412), so a
                        # short body is the connection ending early: the server stopped or the network cut
                        raise StageError("the connection ended while downloading %s (endpoint %s, bucket %r): %d of "
                                         "%d bytes of range %d-%d arrived (server stopped or network cut); check "
                                         "that the server is running"
                                         % (record["key"], self.endpoint_url or "AWS S3", self.bucket, pos - offset,
                                            length, offset, offset + length - 1))
                    with self.lock:
                        self.bytes_received += length
                record["hasher"].part_done(index)
            except Exception as exc:  # noqa: BLE001 - worker thread: any failure is recorded by _fail and reported once as a named StageError
                if error_code(exc) in ("PreconditionFailed", "412"):
                    exc = StageError("s3://%s/%s changed after the manifest was written (ETag no longer matches): "
                                     "re-run mode=push" % (self.bucket, record["key"]))
                elif isinstance(exc, ConnectionError):
                    # the socket broke while the body was read straight from it (splice or readinto)
                    exc = StageError("the connection broke while downloading %s (endpoint %s, bucket %r): %s (server "
                                     "stopped or network cut); check that the server is running"
                                     % (record["key"], self.endpoint_url or "AWS S3", self.bucket, exc))
                self._fail(exc, "downloading %s" % record["key"])
        return task

    # ---- content verification (verify_content) -------------------------------------------------
    def hash_objects(self, items, prefix):
        """relpath -> sha256 of the objects ``items`` [(relpath, size, etag)], streamed, not stored."""
        results = {}

        def make(rel, etag):
            def task():
                try:
                    self._check()
                    kwargs = {"Bucket": self.bucket, "Key": object_key(prefix, rel)}
                    if etag:
                        kwargs["IfMatch"] = '"%s"' % etag
                    body = self.client.get_object(**kwargs)["Body"]
                    digest = hashlib.sha256()
                    count = 0
                    for chunk in body.iter_chunks(HASH_CHUNK):
                        digest.update(chunk)
                        count += len(chunk)
                        self._check()
                    with self.lock:
                        results[rel] = digest.hexdigest()
                        self.bytes_received += count
                except Exception as exc:  # noqa: BLE001 - worker thread: any failure is recorded by _fail and reported once as a named StageError
                    self._fail(exc, "reading %s" % object_key(prefix, rel))
            return task

        self._run([make(rel, etag) for rel, _size, etag in items])
        return results


# --------------------------------------------------------------------------------------------
# Runners (called by the module with a client and validated parameters)
# --------------------------------------------------------------------------------------------

class StageContext(object):
    """What a run needs besides its parameters: the client, where errors point, and the caches."""

    def __init__(self, client, endpoint_url, cache_dir=None, check_mode=False, diff=False):
        self.client = client
        self.endpoint_url = endpoint_url
        self.check_mode = check_mode
        self.diff = diff
        self.warnings = []
        self.cache_dir = self._usable_cache_dir(cache_dir)

    def _usable_cache_dir(self, cache_dir):
        """``cache_dir`` when it can be created and written, else None with a warning: without it
        every run re-hashes its files and interrupted uploads cannot be resumed."""
        if not cache_dir:
            return None
        if self.check_mode:
            # Check mode reads an existing cache but changes nothing on disk.
            return cache_dir if os.path.isdir(cache_dir) else None
        try:
            os.makedirs(cache_dir, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=cache_dir, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            return cache_dir
        except OSError as exc:
            self.warnings.append("cache_dir %s is not writable (%s): files are re-hashed on every run and "
                                 "interrupted uploads cannot be resumed; set cache_dir to a writable directory"
                                 % (cache_dir, exc.strerror or exc))
            return None

    def hash_cache(self):
        cache = HashCache(os.path.join(self.cache_dir, "sha256-cache.json") if self.cache_dir else None)
        if self.check_mode:
            cache.path = None  # read, never written
        return cache

    def journal(self):
        return UploadJournal(os.path.join(self.cache_dir, "uploads") if self.cache_dir else None)

    def s3_call(self, bucket, action, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - every S3 failure becomes a named StageError
            raise StageError(describe_s3_error(exc, self.endpoint_url, bucket, action), code=error_code(exc)) from None


def _read_json_file(path, rel):
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise StageError("%s is not valid JSON (%s): fix or regenerate the model's %s" % (path, exc, rel)) from None


def inspect_local_model(src, stats, required_files):
    """Check a local model directory before any transfer; return (config, parameter count or None).

    Errors (all collected, one message): missing config.json/weights/shards, unreadable files,
    invalid JSON, safetensors files whose header does not match their size.
    """
    errors = []
    for rel in sorted(stats):
        path = os.path.join(src, *rel.split("/"))
        if not os.access(path, os.R_OK):
            errors.append("%s is not readable by this user (fix its permissions or exclude it)" % path)
    index = None
    if INDEX_NAME in stats and os.access(os.path.join(src, INDEX_NAME), os.R_OK):
        try:
            index = _read_json_file(os.path.join(src, INDEX_NAME), INDEX_NAME)
        except StageError as exc:
            errors.append(exc.message)
            index = {}
    errors.extend(check_model_files(list(stats), required_files, index))
    config = {}
    if CONFIG_NAME in stats and os.access(os.path.join(src, CONFIG_NAME), os.R_OK):
        try:
            config = _read_json_file(os.path.join(src, CONFIG_NAME), CONFIG_NAME)
        except StageError as exc:
            errors.append(exc.message)
    parameters = 0
    counted = False
    for rel in sorted(stats):
        if not rel.endswith(".safetensors"):
            continue
        path = os.path.join(src, *rel.split("/"))
        if not os.access(path, os.R_OK):
            continue
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
                if len(head) == 8:
                    (length,) = struct.unpack("<Q", head)
                    head += handle.read(min(length, MAX_SAFETENSORS_HEADER))
            _header, count = parse_safetensors_header(head, stats[rel].st_size, path)
            parameters += count
            counted = True
        except StageError as exc:
            errors.append(exc.message)
        except OSError as exc:
            errors.append("cannot read %s: %s" % (path, exc.strerror or exc))
    if errors:
        raise StageError("model directory %s is not ready to stage: %s" % (src, "; ".join(errors)), errors=errors)
    return config, (parameters if counted else None)


def _load_remote(ctx, bucket, prefix, create_bucket=False):
    """One paginated listing plus the manifest: (bucket exists, listing without the manifest,
    manifest or None, manifest last_modified). The listing is also the credentials/bucket check."""
    try:
        listing = list_prefix(ctx.client, bucket, prefix)
    except Exception as exc:  # noqa: BLE001 - every S3 failure becomes a named StageError
        if error_code(exc) == "NoSuchBucket":
            if create_bucket:
                return False, {}, None, None
            raise StageError("bucket %r does not exist at %s: create it, or set create_bucket: true"
                             % (bucket, ctx.endpoint_url or "AWS S3"), code="NoSuchBucket") from None
        raise StageError(describe_s3_error(exc, ctx.endpoint_url, bucket, "listing s3://%s/%s" % (bucket, prefix)),
                         code=error_code(exc)) from None
    manifest_obj = listing.pop(MANIFEST_NAME, None)
    manifest = None
    if manifest_obj is not None:
        manifest = ctx.s3_call(bucket, "reading the manifest", read_manifest, ctx.client, bucket,
                               object_key(prefix, MANIFEST_NAME))
    return True, listing, manifest, (manifest_obj or {}).get("last_modified")


def _result_base(mode, bucket, prefix):
    return {
        "changed": False, "mode": mode, "bucket": bucket, "prefix": prefix,
        "checkpoint_path": checkpoint_path(bucket, prefix), "manifest_key": object_key(prefix, MANIFEST_NAME),
        "summary": {}, "files_total": 0, "bytes_total": 0, "files_transferred": 0, "bytes_transferred": 0,
        "files_skipped": 0, "files_deleted": 0, "parts_resumed": 0, "bytes_resumed": 0, "seconds": 0.0,
        "throughput_mib_s": 0.0, "transferred": [], "deleted": [], "bucket_created": False,
        "manifest_written": False, "partials_removed": 0, "partial_bytes_freed": 0,
    }


def run_push(ctx, params):
    started = time.time()
    bucket = params["bucket"]
    prefix = normalize_prefix(params["prefix"])
    src = params["src"]
    result = _result_base("push", bucket, prefix)
    if not os.path.isdir(src):
        raise StageError("src %s is not a directory: give the local directory holding the model" % src)
    exclude = list(DEFAULT_EXCLUDE) + list(params.get("exclude") or [])
    include = params.get("include") or []
    stats = scan_local_dir(src, include, exclude)
    if not stats:
        raise StageError("src %s holds no files selected by include/exclude" % src)
    config, parameters = inspect_local_model(src, stats, params.get("required_files"))

    bucket_exists, remote, manifest, _modified = _load_remote(ctx, bucket, prefix, params.get("create_bucket"))

    sizes = dict((rel, st.st_size) for rel, st in stats.items())
    paths = dict((rel, (os.path.join(os.path.abspath(src), *rel.split("/")), st)) for rel, st in stats.items())
    # Objects the manifest does not vouch for (e.g. a push interrupted before its manifest) but of the
    # right size: their sha256 metadata decides. In a normal run this makes no request.
    head_shas = _head_shas(ctx, bucket, prefix, [rel for rel in sorted(sizes) if needs_head(
        rel, remote.get(rel), sizes[rel], manifest)], params["concurrency"])

    # Hash (cached) and upload as a pipeline: a file starts moving as soon as its SHA-256 says it must,
    # while the next files are still being hashed.
    cache = ctx.hash_cache()
    writer = None if ctx.check_mode else _PushWriter(ctx, params, bucket, prefix, bucket_exists, manifest)
    local = {}
    try:
        for rel, sha in hash_files_iter(paths, cache, params["concurrency"]):
            local[rel] = {"size": sizes[rel], "sha256": sha}
            obj = remote.get(rel)
            if writer and push_reason(local[rel], obj, remote_sha256(rel, obj, manifest, head_shas.get(rel))):
                writer.upload(rel, paths[rel][0], local[rel])
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        cache.save()
    plan = plan_push(local, remote, manifest, params.get("delete_extra"), include, exclude, head_shas)
    summary = summarize_model(config, sizes, parameters)

    result.update(summary=summary, files_total=len(local), bytes_total=sum(sizes.values()),
                  files_skipped=len(plan["skip"]))
    result["plan"] = {"upload": [{"path": r, "reason": why} for r, why in plan["upload"]],
                      "delete": plan["delete"], "skip": len(plan["skip"])}
    upload_bytes = sum(sizes[r] for r, _why in plan["upload"])
    if ctx.diff:
        before_files = dict((r, {"size": o["size"], "sha256": remote_sha256(r, o, manifest, head_shas.get(r))})
                            for r, o in remote.items())
        result["diff"] = render_diff(before_files, local)

    # Nothing to upload or delete and the manifest would say the same: no write at all.
    needs_write = bool(plan["upload"] or plan["delete"] or not bucket_exists)
    if not needs_write:
        needs_write = manifest_content(build_manifest(plan["files"], summary)) != manifest_content(manifest)
    if ctx.check_mode:
        result.update(changed=needs_write, files_transferred=len(plan["upload"]), bytes_transferred=upload_bytes,
                      files_deleted=len(plan["delete"]), transferred=[r for r, _why in plan["upload"]],
                      deleted=plan["delete"], bucket_created=not bucket_exists, manifest_written=needs_write)
        return result
    if not needs_write:
        result["seconds"] = round(time.time() - started, 3)
        return result

    writer.begin()
    etags = writer.finish()
    for rel, etag in etags.items():
        plan["files"][rel]["etag"] = etag
    deleted = []
    for rel in plan["delete"]:
        key = object_key(prefix, rel)
        ctx.s3_call(bucket, "deleting %s" % key, ctx.client.delete_object, Bucket=bucket, Key=key)
        deleted.append(rel)
    body = json.dumps(build_manifest(plan["files"], summary), indent=1, sort_keys=True).encode("utf-8")
    ctx.s3_call(bucket, "writing the manifest", ctx.client.put_object, Bucket=bucket,
                Key=object_key(prefix, MANIFEST_NAME), Body=body, ContentType="application/json")
    engine = writer.engine
    seconds = time.time() - writer.started_at
    result.update(changed=True, files_transferred=len(plan["upload"]), bytes_transferred=engine.bytes_sent,
                  parts_resumed=engine.parts_resumed, bytes_resumed=engine.bytes_resumed,
                  files_deleted=len(deleted), transferred=[r for r, _why in plan["upload"]], deleted=deleted,
                  bucket_created=writer.bucket_created, manifest_written=True,
                  throughput_mib_s=mib_per_second(engine.bytes_sent, seconds))
    result["seconds"] = round(time.time() - started, 3)
    return result


class _PushWriter(object):
    """The writing side of a push: on the first write it creates the bucket if needed and removes the
    old manifest (readers must not trust it while objects under it change), then feeds uploads to
    the transfer engine as the planner decides them."""

    def __init__(self, ctx, params, bucket, prefix, bucket_exists, manifest):
        self.ctx = ctx
        self.params = params
        self.bucket = bucket
        self.prefix = prefix
        self.bucket_exists = bucket_exists
        self.manifest = manifest
        self.resume = params.get("resume", True)
        self.engine = TransferEngine(ctx.client, bucket, params["concurrency"], params["part_size"],
                                     ctx.endpoint_url, ctx.journal())
        self.started_at = None
        self.bucket_created = False

    def begin(self):
        if self.started_at is not None:
            return
        self.started_at = time.time()
        if not self.bucket_exists:
            kwargs = {"Bucket": self.bucket}
            region = self.params.get("region")
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.ctx.s3_call(self.bucket, "creating the bucket", self.ctx.client.create_bucket, **kwargs)
            self.bucket_created = True
        if self.manifest is not None:
            self.ctx.s3_call(self.bucket, "removing the old manifest", self.ctx.client.delete_object,
                             Bucket=self.bucket, Key=object_key(self.prefix, MANIFEST_NAME))
        self.engine.start_uploads(self.prefix, self.resume)

    def upload(self, rel, path, info):
        self.begin()
        try:
            self.engine.submit_upload(rel, path, info["size"], info["sha256"])
        except StageError:
            pass  # recorded by the engine, which is cancelling; finish() reports it

    def finish(self):
        """relpath -> etag of the uploads, or a StageError saying how far it got."""
        try:
            return self.engine.finish_uploads()
        except StageError:
            if not self.resume:
                self.engine.abort_open_uploads()
            raise StageError(
                "%s (%d bytes were sent before the failure; %s)" % (
                    self.engine.errors[0] if self.engine.errors else "upload failed", self.engine.bytes_sent,
                    "re-run to resume" if self.resume else "incomplete uploads were aborted"),
                errors=self.engine.errors) from None

    def abort(self):
        """Stop after a planning failure: cancel queued parts, wait for those in flight."""
        if self.started_at is None:
            return
        self.engine.cancel.set()
        try:
            self.engine.finish_uploads()
        except StageError:
            pass
        if not self.resume:
            self.engine.abort_open_uploads()


def _head_shas(ctx, bucket, prefix, rels, concurrency):
    """relpath -> ``sha256`` metadata of those objects that carry it (HEAD requests in parallel)."""
    def head(rel):
        key = object_key(prefix, rel)
        meta = ctx.s3_call(bucket, "reading metadata of %s" % key, ctx.client.head_object, Bucket=bucket,
                           Key=key).get("Metadata") or {}
        return rel, meta.get("sha256")

    if not rels:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(rels)))) as pool:
        return dict((rel, sha) for rel, sha in pool.map(head, rels) if sha)


def _staged_model(ctx, params, action):
    """Listing + manifest of a staged prefix, refusing anything incomplete. Returns (prefix, listing,
    manifest)."""
    bucket = params["bucket"]
    prefix = normalize_prefix(params["prefix"])
    _exists, remote, manifest, manifest_modified = _load_remote(ctx, bucket, prefix)
    where = checkpoint_path(bucket, prefix)
    if manifest is None:
        raise StageError(
            "cannot %s %s: it has no %s, so it was never completely staged (or a push is in progress or was "
            "interrupted). Stage it with s3_model_stage mode=push first" % (action, where, MANIFEST_NAME),
            objects=len(remote))
    problems = listing_problems(manifest, remote, manifest_modified)
    if problems:
        raise StageError("cannot %s %s: it does not match its manifest: %s. Re-run mode=push from the source"
                         % (action, where, "; ".join("%s: %s" % p for p in problems)),
                         files=[p[0] for p in problems])
    errors = check_model_files(list(manifest["files"]), params.get("required_files"), _manifest_index(ctx, params,
                                                                                                      prefix, manifest))
    if errors:
        raise StageError("cannot %s %s: the staged model is incomplete: %s" % (action, where, "; ".join(errors)))
    return prefix, remote, manifest


def _manifest_index(ctx, params, prefix, manifest):
    if INDEX_NAME not in manifest["files"] or params.get("required_files") is not None:
        return None
    key = object_key(prefix, INDEX_NAME)
    resp = ctx.s3_call(params["bucket"], "reading %s" % key, ctx.client.get_object, Bucket=params["bucket"], Key=key)
    try:
        return json.loads(resp["Body"].read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def run_verify(ctx, params):
    started = time.time()
    bucket = params["bucket"]
    prefix, remote, manifest = _staged_model(ctx, params, "verify")
    result = _result_base("verify", bucket, prefix)
    files = manifest["files"]
    result.update(summary=manifest.get("summary") or {}, files_total=len(files),
                  bytes_total=sum(f["size"] for f in files.values()))
    if params.get("verify_content"):
        engine = TransferEngine(ctx.client, bucket, params["concurrency"], params["part_size"], ctx.endpoint_url)
        shas = engine.hash_objects([(rel, f["size"], f.get("etag")) for rel, f in sorted(files.items())], prefix)
        bad = sorted(rel for rel, f in files.items() if shas.get(rel) != f["sha256"])
        if bad:
            raise StageError("verify failed for %s: content of %s does not match the manifest's sha256 (changed or "
                             "corrupted after staging). Re-run mode=push from the source"
                             % (checkpoint_path(bucket, prefix), ", ".join(bad)), files=bad)
        result["bytes_read"] = engine.bytes_received
    result["seconds"] = round(time.time() - started, 3)
    return result


def run_pull(ctx, params):
    started = time.time()
    bucket = params["bucket"]
    dest = params["dest"]
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise StageError("dest %s exists and is not a directory" % dest)
    prefix, remote, manifest = _staged_model(ctx, params, "pull")
    result = _result_base("pull", bucket, prefix)
    include = params.get("include") or []
    exclude = list(DEFAULT_EXCLUDE) + list(params.get("exclude") or [])
    wanted = dict((rel, f) for rel, f in manifest["files"].items() if path_selected(rel, include, exclude))
    local_stats = scan_local_dir(dest, include, exclude) if os.path.isdir(dest) else {}
    cache = ctx.hash_cache()
    abs_dest = os.path.abspath(dest)
    to_hash = dict((rel, (os.path.join(abs_dest, *rel.split("/")), st)) for rel, st in local_stats.items()
                   if rel in wanted and st.st_size == wanted[rel]["size"])
    local_shas = hash_files(to_hash, cache, params["concurrency"])
    extra = [rel for rel in local_stats if rel not in wanted]
    plan = plan_pull(wanted, dict((r, s.st_size) for r, s in local_stats.items()), local_shas,
                     params.get("delete_extra"), extra)
    local_manifest_path = os.path.join(abs_dest, MANIFEST_NAME)
    local_manifest = None
    if os.path.isfile(local_manifest_path):
        try:
            with open(local_manifest_path, "rb") as handle:
                local_manifest = parse_manifest(handle.read(), local_manifest_path)
        except (OSError, StageError):
            local_manifest = None
    manifest_changed = manifest_content(local_manifest) != manifest_content(manifest)
    download_bytes = sum(wanted[r]["size"] for r, _why in plan["download"])
    result.update(summary=manifest.get("summary") or {}, files_total=len(wanted),
                  bytes_total=sum(f["size"] for f in wanted.values()), files_skipped=len(plan["skip"]))
    result["plan"] = {"download": [{"path": r, "reason": why} for r, why in plan["download"]],
                      "delete": plan["delete"], "skip": len(plan["skip"])}
    if ctx.diff:
        before = dict((r, {"size": s.st_size, "sha256": local_shas.get(r)}) for r, s in local_stats.items())
        after = dict((r, {"size": wanted[r]["size"], "sha256": wanted[r]["sha256"]}) for r in wanted)
        for r in extra:
            if not params.get("delete_extra"):
                after[r] = before[r]
        result["diff"] = render_diff(before, after)
    items = [(rel, wanted[rel]["size"], wanted[rel]["sha256"], wanted[rel].get("etag"))
             for rel, _why in plan["download"]]
    changed = bool(plan["download"] or plan["delete"] or manifest_changed)
    if ctx.check_mode:
        cache.save()
        resumable = sum(resumable_bytes(os.path.dirname(os.path.join(abs_dest, *rel.split("/"))), rel,
                                        object_key(prefix, rel), size, sha, etag) for rel, size, sha, etag in items)
        result.update(changed=changed, files_transferred=len(plan["download"]),
                      bytes_transferred=download_bytes - resumable, bytes_resumed=resumable,
                      files_deleted=len(plan["delete"]), transferred=[r for r, _why in plan["download"]],
                      deleted=plan["delete"], manifest_written=manifest_changed)
        return result
    if not os.path.isdir(abs_dest):
        os.makedirs(abs_dest, exist_ok=True)
    # Partial files of runs that died (another version of a file, files no longer wanted, names of
    # older collection versions) go before anything is downloaded: never two partial copies on disk.
    partials_removed, partial_bytes_freed = remove_dead_partials(abs_dest, _live_partials(abs_dest, items))
    result.update(partials_removed=partials_removed, partial_bytes_freed=partial_bytes_freed)
    changed = changed or bool(partials_removed)
    transfer_started = time.time()
    engine = TransferEngine(ctx.client, bucket, params["concurrency"], params["part_size"], ctx.endpoint_url)

    def drop_local_manifest():
        # The local manifest vouches for the files in dest: it goes before the first file is replaced
        # and comes back (the new one) after the last, so no reader sees an old manifest over new bytes.
        if os.path.isfile(local_manifest_path):
            os.unlink(local_manifest_path)

    try:
        done = engine.download(items, prefix, abs_dest, drop_local_manifest) if items else {}
    except StageError as exc:
        raise StageError("%s. No file in dest %s was replaced; what was downloaded is kept in its *%s files and "
                         "a re-run resumes from there (%d bytes fetched in this run, %d resumed)"
                         % (exc.message, abs_dest, PARTIAL_SUFFIX, engine.bytes_received, engine.bytes_resumed),
                         **exc.details) from None
    finally:
        cache.save()
    if plan["delete"]:
        drop_local_manifest()
    for rel, path in done.items():
        cache.store(path, os.stat(path), wanted[rel]["sha256"], volatile=True)
    deleted = []
    for rel in plan["delete"]:
        os.unlink(os.path.join(abs_dest, *rel.split("/")))
        deleted.append(rel)
    if changed:
        _atomic_write_json(local_manifest_path, manifest)
    cache.save()
    seconds = time.time() - transfer_started
    result.update(changed=changed, files_transferred=len(done), bytes_transferred=engine.bytes_received,
                  parts_resumed=engine.parts_resumed, bytes_resumed=engine.bytes_resumed,
                  files_deleted=len(deleted), transferred=sorted(done), deleted=deleted,
                  manifest_written=changed, throughput_mib_s=mib_per_second(engine.bytes_received, seconds))
    result["seconds"] = round(time.time() - started, 3)
    return result


def _live_partials(dest, items):
    """The partial file paths (data and progress log) the downloads ``items`` use in ``dest``."""
    live = set()
    for rel, size, sha, _etag in items:
        directory = os.path.dirname(os.path.join(dest, *rel.split("/")))
        live.update(os.path.join(directory, name) for name in partial_names(rel, size, sha))
    return live


def run_stage(ctx, params):
    """Entry point: dispatch on ``params['mode']``."""
    mode = params["mode"]
    if mode == "push":
        return run_push(ctx, params)
    if mode == "pull":
        return run_pull(ctx, params)
    return run_verify(ctx, params)
