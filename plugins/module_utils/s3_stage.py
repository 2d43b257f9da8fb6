# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Model weights <-> S3-compatible bucket: the runners the s3_model_stage module and the vLLM role's
pull script call (``run_push``, ``run_pull``, ``run_verify``, ``run_stage``) and their context.

Layout of a staged model at ``s3://bucket/prefix/``: the model's files under their relative paths
plus ``.llmops-manifest.json``, written last. The manifest lists every file with size, SHA-256 and
the ETag the object had when the manifest was written, and a summary of the model. Readers (pull,
verify, the vLLM role) trust a prefix only through a manifest that matches the bucket listing.

The work is split by job: s3_stage_common (errors, constants, names and sizes), s3_model_files
(model checks and summary), s3_manifest (manifest and plans), s3_hash_cache (local scan and
hashes), s3_partial (resumable pulls), s3_body (one part's bytes), s3_transfer (parallel
transfers). Decisions are pure functions of plain data; I/O sits in the classes and the ``run_*``
functions.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.llmops.serving.plugins.module_utils.s3 import (
    describe_s3_error,
    error_code,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_hash_cache import (
    HashCache,
    hash_files_iter,
    scan_local_dir,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_manifest import (
    build_manifest,
    list_prefix,
    listing_problems,
    manifest_content,
    needs_head,
    parse_manifest,
    plan_pull,
    plan_push,
    push_reason,
    read_manifest,
    remote_sha256,
    render_diff,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_model_files import (
    check_model_files,
    inspect_local_model,
    summarize_model,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_partial import (
    partial_names,
    remove_dead_partials,
    resumable_bytes,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    DEFAULT_EXCLUDE,
    INDEX_NAME,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    StageError,
    _atomic_write_json,
    checkpoint_path,
    mib_per_second,
    normalize_prefix,
    object_key,
    path_selected,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_transfer import (
    TransferEngine,
    UploadJournal,
)


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
    writer = None if ctx.check_mode else _PushWriter(ctx, params, bucket, prefix, bucket_exists, manifest)
    local = _hash_and_upload(ctx, params["concurrency"], paths, remote, manifest, head_shas, writer)
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

    deleted = _complete_push(ctx, writer, bucket, prefix, plan, summary)
    engine = writer.engine
    seconds = time.time() - writer.started_at
    result.update(changed=True, files_transferred=len(plan["upload"]), bytes_transferred=engine.bytes_sent,
                  parts_resumed=engine.parts_resumed, bytes_resumed=engine.bytes_resumed,
                  files_deleted=len(deleted), transferred=[r for r, _why in plan["upload"]], deleted=deleted,
                  bucket_created=writer.bucket_created, manifest_written=True,
                  throughput_mib_s=mib_per_second(engine.bytes_sent, seconds))
    result["seconds"] = round(time.time() - started, 3)
    return result


def _hash_and_upload(ctx, concurrency, paths, remote, manifest, head_shas, writer):
    """Hash (cached) and upload as a pipeline: a file starts moving as soon as its SHA-256 says it must,
    while the next files are still being hashed. Returns relpath -> {size, sha256} of every file."""
    cache = ctx.hash_cache()
    local = {}
    try:
        for rel, sha in hash_files_iter(paths, cache, concurrency):
            local[rel] = {"size": paths[rel][1].st_size, "sha256": sha}
            obj = remote.get(rel)
            if writer and push_reason(local[rel], obj, remote_sha256(rel, obj, manifest, head_shas.get(rel))):
                writer.upload(rel, paths[rel][0], local[rel])
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        cache.save()
    return local


def _complete_push(ctx, writer, bucket, prefix, plan, summary):
    """Finish the uploads, delete what the plan deletes, then write the manifest (last, so that it
    only ever vouches for objects already there). Returns the deleted relpaths."""
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
    return deleted


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
    local_shas = dict(hash_files_iter(to_hash, cache, params["concurrency"]))
    extra = [rel for rel in local_stats if rel not in wanted]
    plan = plan_pull(wanted, dict((r, s.st_size) for r, s in local_stats.items()), local_shas,
                     params.get("delete_extra"), extra)
    local_manifest_path = os.path.join(abs_dest, MANIFEST_NAME)
    manifest_changed = manifest_content(_read_local_manifest(local_manifest_path)) != manifest_content(manifest)
    download_bytes = sum(wanted[r]["size"] for r, _why in plan["download"])
    result.update(summary=manifest.get("summary") or {}, files_total=len(wanted),
                  bytes_total=sum(f["size"] for f in wanted.values()), files_skipped=len(plan["skip"]))
    result["plan"] = {"download": [{"path": r, "reason": why} for r, why in plan["download"]],
                      "delete": plan["delete"], "skip": len(plan["skip"])}
    if ctx.diff:
        result["diff"] = _pull_diff(local_stats, local_shas, wanted, extra, params.get("delete_extra"))
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
    deleted = _complete_pull(abs_dest, plan["delete"], done, wanted, cache)
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


def _complete_pull(abs_dest, delete, done, wanted, cache):
    """Remember the hashes of the files just downloaded (until the next reboot: not fsynced) and delete
    the files the plan deletes; returns the deleted relpaths."""
    for rel, path in done.items():
        cache.store(path, os.stat(path), wanted[rel]["sha256"], volatile=True)
    deleted = []
    for rel in delete:
        os.unlink(os.path.join(abs_dest, *rel.split("/")))
        deleted.append(rel)
    return deleted


def _read_local_manifest(path):
    """The manifest a previous pull left in dest, or None when there is none or it is unreadable."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as handle:
            return parse_manifest(handle.read(), path)
    except (OSError, StageError):
        return None


def _pull_diff(local_stats, local_shas, wanted, extra, delete_extra):
    before = dict((r, {"size": s.st_size, "sha256": local_shas.get(r)}) for r, s in local_stats.items())
    after = dict((r, {"size": wanted[r]["size"], "sha256": wanted[r]["sha256"]}) for r in wanted)
    for r in extra:
        if not delete_extra:
            after[r] = before[r]
    return render_diff(before, after)


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
