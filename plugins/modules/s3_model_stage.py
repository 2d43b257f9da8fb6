#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE) or GNU General Public License v3.0+
# (see https://www.gnu.org/licenses/gpl-3.0.txt), at your option.
# SPDX-License-Identifier: Apache-2.0 OR GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: s3_model_stage
short_description: Stage model weights in an S3-compatible bucket, pull them, or verify them
version_added: 0.1.0
description:
  - V(push) uploads a local Hugging Face model directory to C(s3://bucket/prefix/), V(pull) downloads a
    staged model into a local directory (a model cache on a hostPath or PVC), V(verify) checks that a
    staged model is complete and intact without moving its bytes.
  - Planning costs one paginated listing of the prefix plus a read of the manifest. A file is skipped
    when the object has the same size and SHA-256 (the manifest or the object's C(sha256) metadata
    holds it); ETags are never taken as content hashes. Local SHA-256 values are cached per path,
    size, mtime, ctime and inode, so a re-run hashes only files that changed.
  - Files and their parts move in parallel on one bounded pool. Peak buffer memory is about
    O(concurrency) times O(part_size) for pushes and O(concurrency) times 128 KiB for pulls. Every upload
    request body's SHA-256 is signed into the request (SigV4 payload signing), so the server rejects
    corrupted parts.
  - Over plain HTTP on Linux a pull moves each response body from the socket into the file with
    splice(2) (plus a 1 MiB kernel pipe per request in flight), without copying it through the
    module; HTTPS endpoints and file systems that refuse splice go through the buffer.
  - An interrupted multipart upload is resumed on the next run (with O(resume=true)) when the local
    upload journal in O(cache_dir) shows it holds the same file content; the parts the server
    accepted (same size and ETag as when it accepted them) are kept, the others are sent.
  - A manifest C(.llmops-manifest.json) with every file's size and SHA-256 and a model summary
    (architecture, dtype, parameter count, bytes) is written last. V(pull) and V(verify) refuse a
    prefix without a manifest matching the bucket listing, and V(pull) checks every downloaded
    file's SHA-256 before renaming it into place.
  - An interrupted V(pull) (process killed, node restarted, server gone) resumes on the next run.
    Each file is downloaded into C(.<name>.<id>.llmops-partial) next to it, with C(<id>) derived from
    its path, size and manifest SHA-256, and the byte ranges on disk are appended to
    C(.<name>.<id>.progress.llmops-partial) every 4 MiB of a request (data fdatasync'ed first), so a
    re-run keeps them and fetches only the rest (RV(bytes_resumed)). A partial file whose object changed
    (other manifest entry or ETag) is discarded, a resumed file whose SHA-256 fails is fetched again
    from zero, and nothing is renamed into place before its SHA-256 matches the manifest.
  - Before downloading, V(pull) removes the C(*.llmops-partial) files under O(dest) that this run does
    not use and no running process holds (files are locked while a pull uses them), so partial copies
    of dead runs never pile up (RV(partials_removed)). Two pulls of the same file into the same O(dest)
    at once are refused (the second fails naming the file), and a re-run after the first finishes
    finds it in place.
  - C(changed) is true only when bytes were written (objects or files, including the manifest) or
    objects/files were deleted.
author:
  - llmops.serving contributors (@llmops)
extends_documentation_fragment:
  - llmops.serving.s3
attributes:
  check_mode:
    support: full
    description: Plans from the real listing and manifest and reports what would move; writes nothing.
  diff_mode:
    support: full
    description: One line per file (path, size, SHA-256) before and after.
options:
  mode:
    description:
      - V(push) local directory O(src) to the bucket, V(pull) the staged model into O(dest), or
        V(verify) the staged model.
    type: str
    required: true
    choices: [push, pull, verify]
  bucket:
    description: Bucket name.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the model, for example V(models/llama-3-8b). Leading and trailing slashes are
        ignored; the model's files go under C(prefix/).
    type: str
    required: true
  src:
    description: Local model directory to upload (O(mode=push) only).
    type: path
  dest:
    description: Local directory to download into (O(mode=pull) only); created when missing.
    type: path
  include:
    description:
      - Shell-style patterns of relative paths to stage (C(*) also matches C(/)). Empty means all.
    type: list
    elements: str
    default: []
  exclude:
    description:
      - Patterns of relative paths to leave out, added to the built-in C(.git/*), C(.cache/*) and
        C(*.llmops-partial).
    type: list
    elements: str
    default: []
  required_files:
    description:
      - Relative paths that must be present. When not set, the model must have C(config.json),
        at least one C(*.safetensors) file and, when C(model.safetensors.index.json) exists, every shard
        it names. An empty list disables the check.
    type: list
    elements: str
  create_bucket:
    description: Create the bucket when it does not exist (O(mode=push) only); otherwise that is an error.
    type: bool
    default: false
  delete_extra:
    description:
      - V(push) deletes objects under the prefix that are not in O(src); V(pull) deletes files in
        O(dest) that are not in the manifest. Paths excluded by the filters are never deleted.
    type: bool
    default: false
  concurrency:
    description:
      - Parallel requests (parts across all files). Between 1 and 256.
      - Default 16, or twice the number of CPU cores of the host running the module where that is
        more (at most 32).
    type: int
  part_size:
    description:
      - Multipart part size and download range size, as bytes or with a unit (V(64MiB)).
        Between 5 MiB and 5 GiB. Files up to this size are sent in one request.
    type: str
    default: 64MiB
  resume:
    description:
      - Resume interrupted multipart uploads found under the prefix. With V(false), leftovers are
        aborted and a failed run aborts its own uploads.
    type: bool
    default: true
  verify_content:
    description:
      - With O(mode=verify), also read every object and compare its SHA-256 with the manifest (reads
        all bytes; nothing is written). Without it, verify compares the listing with the manifest (size,
        ETag recorded at push time, modification time).
    type: bool
    default: false
  cache_dir:
    description:
      - Directory for the local SHA-256 cache and the multipart upload journal, on the host running the
        module. When it cannot be written, the module warns, re-hashes every file and cannot resume.
    type: path
    default: ~/.cache/llmops-serving/s3_model_stage
notes:
  - The manifest is C(<prefix>/.llmops-manifest.json). LLM Engine and vLLM ignore it; it is copied along
    with the model by tools such as C(s5cmd cp).
  - Resuming needs the journal written by the interrupted run, so resume from the same host and
    O(cache_dir).
seealso:
  - module: amazon.aws.s3_object
"""

EXAMPLES = r"""
- name: Push a local model to MinIO
  llmops.serving.s3_model_stage:
    mode: push
    src: /srv/models/Llama-3.1-8B-Instruct
    bucket: models
    prefix: llama-3.1-8b-instruct
    endpoint_url: https://minio.example.internal:9000
    access_key: "{{ minio_access_key }}"
    secret_key: "{{ minio_secret_key }}"
    ca_bundle: /etc/pki/minio-ca.pem
  register: staged

- name: Check that a model staged elsewhere is complete
  llmops.serving.s3_model_stage:
    mode: verify
    bucket: models
    prefix: mistral-7b-instruct
    endpoint_url: https://minio.example.internal:9000

- name: Fill a node-local model cache (no-op when the cache is intact)
  llmops.serving.s3_model_stage:
    mode: pull
    bucket: models
    prefix: llama-3.1-8b-instruct
    dest: /var/lib/llm-cache/llama-3.1-8b-instruct
    endpoint_url: https://minio.example.internal:9000
    concurrency: 32
"""

RETURN = r"""
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: push
bucket:
  description: Bucket name.
  returned: always
  type: str
  sample: models
prefix:
  description: Normalized prefix (with trailing slash, empty for the bucket root).
  returned: always
  type: str
  sample: llama-3.1-8b-instruct/
checkpoint_path:
  description: The model's location, as LLM Engine's C(checkpoint_path) expects it.
  returned: always
  type: str
  sample: s3://models/llama-3.1-8b-instruct/
manifest_key:
  description: Object key of the manifest.
  returned: always
  type: str
  sample: llama-3.1-8b-instruct/.llmops-manifest.json
summary:
  description: Model summary from C(config.json) and the safetensors headers (kept in the manifest).
  returned: always
  type: dict
  sample:
    architecture: LlamaForCausalLM
    model_type: llama
    dtype: bfloat16
    parameters: 8030261248
    parameters_billions: 8.03
    parameters_source: safetensors_header
    total_bytes: 16060522240
files_total:
  description: Files in the model (after include/exclude).
  returned: always
  type: int
  sample: 12
bytes_total:
  description: Bytes in the model.
  returned: always
  type: int
  sample: 16060522240
files_transferred:
  description: Files uploaded (push) or downloaded (pull); in check mode, files that would be.
  returned: always
  type: int
  sample: 1
bytes_transferred:
  description: Bytes sent or received, not counting resumed parts or ranges; in check mode, bytes that would be.
  returned: always
  type: int
  sample: 4976698672
files_skipped:
  description: Files already in place with the same size and SHA-256.
  returned: always
  type: int
  sample: 11
files_deleted:
  description: Objects (push) or local files (pull) deleted by O(delete_extra).
  returned: always
  type: int
  sample: 0
parts_resumed:
  description:
    - Push, parts of interrupted multipart uploads that were kept instead of sent again.
    - Pull, download ranges found complete in the partial files of an interrupted pull.
  returned: always
  type: int
  sample: 0
bytes_resumed:
  description:
    - Bytes kept instead of moved again, push, in those parts; pull, in the partial files of an
      interrupted pull (in check mode, that would be kept).
  returned: always
  type: int
  sample: 0
partials_removed:
  description:
    - Pull, C(*.llmops-partial) files of dead runs removed from O(dest) (other versions of the files,
      files no longer wanted, names of older collection versions); 0 for push and verify.
  returned: always
  type: int
  sample: 0
partial_bytes_freed:
  description: Disk bytes those files used.
  returned: always
  type: int
  sample: 0
transferred:
  description: Relative paths uploaded or downloaded (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [model-00001-of-00004.safetensors]
deleted:
  description: Relative paths deleted (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: []
plan:
  description: What the run decided, with a reason per file.
  returned: when mode is push or pull
  type: dict
  sample:
    upload: [{path: config.json, reason: new}]
    delete: []
    skip: 3
bucket_created:
  description: Whether the bucket was (or in check mode would be) created.
  returned: always
  type: bool
  sample: false
manifest_written:
  description: Whether the manifest was (or would be) written.
  returned: always
  type: bool
  sample: true
bytes_read:
  description: Bytes read to check content (O(verify_content=true)).
  returned: when mode is verify and verify_content is true
  type: int
  sample: 16060522240
seconds:
  description: Wall-clock seconds of the whole run.
  returned: always
  type: float
  sample: 41.2
throughput_mib_s:
  description: Transfer throughput in MiB/s (bytes transferred / transfer time).
  returned: always
  type: float
  sample: 371.5
"""


import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.llmops.serving.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    S3ConfigError,
    build_s3_client,
    s3_connection_spec,
    validate_connection_params,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_stage import (
    StageContext,
    run_stage,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    StageError,
    default_concurrency,
    parse_size,
    validate_stage_params,
)


def argument_spec():
    spec = s3_connection_spec()
    spec.update(
        mode=dict(type="str", required=True, choices=["push", "pull", "verify"]),
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", required=True),
        src=dict(type="path"),
        dest=dict(type="path"),
        include=dict(type="list", elements="str", default=[]),
        exclude=dict(type="list", elements="str", default=[]),
        required_files=dict(type="list", elements="str"),
        create_bucket=dict(type="bool", default=False),
        delete_extra=dict(type="bool", default=False),
        concurrency=dict(type="int"),
        part_size=dict(type="str", default="64MiB"),
        resume=dict(type="bool", default=True),
        verify_content=dict(type="bool", default=False),
        cache_dir=dict(type="path", default="~/.cache/llmops-serving/s3_model_stage"),
    )
    return spec


def _fail_with(module, message, **extra):
    module.fail_json(msg=message, **extra)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=to_native(BOTO3_IMPORT_ERROR))
    params = dict(module.params)
    try:
        params["part_size"] = parse_size(params["part_size"])
    except StageError as exc:
        _fail_with(module, exc.message)
    if params["concurrency"] is None:
        params["concurrency"] = default_concurrency(os.cpu_count())
    errors = validate_connection_params(params) + validate_stage_params(params)
    if errors:
        _fail_with(module, "; ".join(errors))
    try:
        client = build_s3_client(params, params["concurrency"])
    except S3ConfigError as exc:
        _fail_with(module, to_native(exc))
    ctx = StageContext(client, params.get("endpoint_url"), params["cache_dir"], module.check_mode, module._diff)
    try:
        result = run_stage(ctx, params)
    except StageError as exc:
        _fail_with(module, exc.message, **dict((k, v) for k, v in exc.details.items() if k != "errors"))
    for warning in ctx.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
