# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""The manifest (``.llmops-manifest.json``) and the plans made from it: build, parse and check a
manifest against the bucket listing, decide which files to upload, download or delete (pure), and
the two S3 reads planning needs (one paginated listing, the manifest).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json

from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    StageError,
    path_selected,
)

MANIFEST_FORMAT = "llmops.serving/model-manifest"
MANIFEST_VERSION = 1


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


def render_diff(before_files, after_files):
    """Ansible diff dict: one line per file, ``relpath size sha256``."""
    def lines(files):
        return "".join("%s %d %s\n" % (rel, f["size"], f.get("sha256") or "?") for rel, f in sorted(files.items()))
    return {"before": lines(before_files), "after": lines(after_files)}


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
