# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""A model directory's files: safetensors headers, the files a complete model has, the parameter
estimate and summary recorded in the manifest, and the local check before a push (all pure except
``inspect_local_model``, which reads the directory).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import struct

from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    CONFIG_NAME,
    INDEX_NAME,
    StageError,
)

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1,
    "F6_E3M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8,
    "I64": 8, "F64": 8, "C64": 8,
}


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
