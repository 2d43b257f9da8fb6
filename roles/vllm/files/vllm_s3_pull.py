# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Init container of the vllm role: pull a staged model from S3 into the model cache.

Runs the same code as ``llmops.serving.s3_model_stage mode=pull`` (module_utils/s3_stage.py), so the
copy is verified against the staging manifest with the same rules: a prefix without a complete,
matching manifest is refused, every file is checked by size and SHA-256, files that are already
intact in the cache are not downloaded again, and downloads land in partial files that are
renamed only after they verified. A pull that was killed (pod restart, node restart, S3 server gone)
resumes on the next start: the bytes its partial files hold are kept and only the rest is fetched
(``bytes_resumed`` in the summary line); partial files of other versions are removed first.

The image needs python3, ansible-core (the collection's code imports ansible.module_utils), boto3 and
the llmops.serving collection, for example the execution environment built from ee/execution-environment.yml.
A missing one is named before anything is pulled (exit status 1). The role mounts this script from a
ConfigMap and runs::

    python3 /opt/llmops/vllm_s3_pull.py --source s3://bucket/prefix/ --dest /models/s3/bucket/prefix \
        --cache-dir /models/.llmops/hash-cache

Connection settings come from the environment: ``S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``),
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (from a Secret), ``AWS_REGION``,
``AWS_CA_BUNDLE``, ``S3_VALIDATE_CERTS`` (``false`` to skip TLS checks), ``S3_ADDRESSING_STYLE``.
Exit status: 0 pulled or already intact, 1 refused or failed (message on stderr), 2 bad usage.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import importlib.util
import json
import os
import sys

COLLECTION_DIRS = (
    os.path.expanduser("~/.ansible/collections"),
    "/usr/share/ansible/collections",
    "/usr/local/share/ansible/collections",
)


def _collection_paths():
    paths = []
    for name in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"):
        paths += [item for item in os.environ.get(name, "").split(os.pathsep) if item]
    return paths + list(COLLECTION_DIRS)


# What the image must provide, in the order to check it: the module that proves it, and what to install.
REQUIREMENTS = (
    ("ansible", "ansible-core (pip install 'ansible-core>=2.19,<2.20'; the collection's code imports "
                "ansible.module_utils)"),
    ("boto3", "boto3 (pip install boto3)"),
    ("ansible_collections.llmops.serving", "the llmops.serving collection (ansible-galaxy collection install, or set "
                                           "ANSIBLE_COLLECTIONS_PATH to where it is)"),
)


def missing_requirements(find_spec=importlib.util.find_spec):
    """What of REQUIREMENTS the running Python cannot import -> list of install hints."""
    missing = []
    for module, hint in REQUIREMENTS:
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(hint)
    return missing


def _import_stage():
    for path in reversed(_collection_paths()):
        if os.path.isdir(os.path.join(path, "ansible_collections")) and path not in sys.path:
            sys.path.insert(0, path)
    missing = missing_requirements()
    if missing:
        raise SystemExit(
            "vllm_s3_pull: vllm_s3_puller_image lacks %s; use an image with python3, ansible-core, boto3 and the "
            "collection, such as the execution environment built from ee/execution-environment.yml"
            % "; ".join(missing))
    try:
        from ansible_collections.llmops.serving.plugins.module_utils import s3 as s3_utils
        from ansible_collections.llmops.serving.plugins.module_utils import s3_stage, s3_stage_common
        from ansible_collections.llmops.serving.plugins.modules import s3_model_stage
    except ImportError as exc:
        raise SystemExit(
            "vllm_s3_pull: cannot import the llmops.serving collection (%s); vllm_s3_puller_image must contain "
            "python3, ansible-core, boto3 and the collection (install it with ansible-galaxy or set "
            "ANSIBLE_COLLECTIONS_PATH)" % exc) from None
    return s3_utils, s3_stage, s3_stage_common, s3_model_stage


def split_source(source):
    """s3://bucket/prefix/ -> (bucket, prefix)."""
    if not source.startswith("s3://") or len(source) <= len("s3://"):
        raise ValueError("--source %r must look like s3://bucket/prefix/" % source)
    bucket, _slash, prefix = source[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError("--source %r has no bucket" % source)
    return bucket, prefix.strip("/")


def build_params(module, args, environ):
    """The s3_model_stage parameters for a pull, with the module's own defaults."""
    params = {}
    for name, option in module.argument_spec().items():
        params[name] = option.get("default")
    bucket, prefix = split_source(args.source)
    endpoint = environ.get("S3_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    params.update(
        mode="pull", bucket=bucket, prefix=prefix, dest=args.dest, concurrency=args.concurrency,
        endpoint_url=endpoint or None,
        region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        access_key=environ.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=environ.get("AWS_SESSION_TOKEN") or None,
        ca_bundle=environ.get("AWS_CA_BUNDLE") or None,
        validate_certs=environ.get("S3_VALIDATE_CERTS", "true").lower() not in ("0", "false", "no"),
        addressing_style=environ.get("S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto"),
        cache_dir=args.cache_dir,
    )
    return params


def main(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(description="Pull a staged model from S3, verified against its manifest.")
    parser.add_argument("--source", required=True, help="s3://bucket/prefix/ of the staged model")
    parser.add_argument("--dest", required=True, help="directory in the model cache")
    parser.add_argument("--cache-dir", default=None, help="where to keep the hash cache (default: next to dest)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if args.cache_dir is None:
        args.cache_dir = os.path.join(os.path.dirname(os.path.abspath(args.dest)), ".llmops-hash-cache")
    s3_utils, s3_stage, common, module = _import_stage()
    try:
        params = build_params(module, args, environ)
        params["part_size"] = common.parse_size(params["part_size"])
    except (ValueError, common.StageError) as exc:
        print("vllm_s3_pull: %s" % getattr(exc, "message", exc), file=sys.stderr)
        return 2
    errors = s3_utils.validate_connection_params(params) + common.validate_stage_params(params)
    if errors:
        print("vllm_s3_pull: " + "; ".join(errors), file=sys.stderr)
        return 2
    try:
        client = s3_utils.build_s3_client(params, params["concurrency"])
        ctx = s3_stage.StageContext(client, params["endpoint_url"], params["cache_dir"], False, False)
        result = s3_stage.run_stage(ctx, params)
    except s3_utils.S3ConfigError as exc:
        print("vllm_s3_pull: %s" % exc, file=sys.stderr)
        return 1
    except common.StageError as exc:
        print("vllm_s3_pull: %s" % exc.message, file=sys.stderr)
        return 1
    for warning in getattr(ctx, "warnings", []):
        print("vllm_s3_pull: warning: %s" % warning, file=sys.stderr)
    summary = dict((key, result.get(key)) for key in ("changed", "files_total", "files_transferred", "files_skipped",
                                                      "bytes_total", "bytes_transferred", "bytes_resumed",
                                                      "partials_removed", "seconds"))
    print(json.dumps(dict(summary, source=args.source, dest=args.dest), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
