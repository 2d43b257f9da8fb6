"""Watchers and progress probes for the S3 kill drill (tests/drills/test_drill_s3_kill.py).

A watcher is a reader that runs in a thread during a whole transfer and checks the promise of
``s3_model_stage``: whenever a manifest is visible (in the bucket for a push, in the destination
directory for a pull), every file it lists is there with the listed size and SHA-256.

An observation is only judged when it is a consistent read: the manifest is the same object (bucket:
same ETag; directory: same inode, size and mtime) before and after its files were read. A manifest
that changed or vanished while its files were being read is a *torn* read, counted but not judged:
a real reader (pull, verify, vLLM) pins the manifest's ETags and would retry. A manifest that stays
in place while its files do not match it is a violation, which is what a push that overwrote files
under a live manifest, or wrote its manifest before its files, would show.
"""

import hashlib
import json
import os
import threading
import time

from ansible_collections.llmops.serving.plugins.module_utils import s3

MANIFEST = ".llmops-manifest.json"
PARTIAL_SUFFIX = ".llmops-partial"
HASH_CHUNK = 4 * 1024 * 1024


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def published_digest(root):
    """dir_digest() of the files a pull published under ``root``: its partial files left out."""
    return dict((rel, v) for rel, v in dir_digest(root).items() if not rel.endswith(PARTIAL_SUFFIX))


def dir_digest(root):
    """relpath -> (size, sha256) of the regular files under ``root``."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = (os.path.getsize(full), sha256_file(full))
    return out


def fast_client(conn):
    """A client for ``conn`` set up as tests/integration/s3_helpers.py's ``client_for`` sets it up (the
    module's own settings, plugins/module_utils/s3.py), but failing fast while the server is down (no
    retries, 1 s connect timeout), so a watcher keeps polling instead of sleeping in backoff."""
    import boto3
    from botocore.config import Config

    params = dict(conn, addressing_style="auto")
    config = s3.client_config_kwargs(params, concurrency=4)
    config.update(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=10)
    session = boto3.session.Session(**s3.session_kwargs(params))
    return session.client("s3", config=Config(**config), **s3.client_kwargs(params))


class _TornReadError(Exception):
    """The manifest changed or vanished while its files were being read."""


class _ServerDownError(Exception):
    """The server did not answer (killed, restarting)."""


class Watcher(threading.Thread):
    """Polls every ``interval`` seconds until stopped; subclasses implement ``observe_once`` returning
    ``('absent'|'down'|'torn', None)`` or ``('manifest', (manifest_id, problems))``."""

    def __init__(self, interval=0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.observations = []  # (time, kind, manifest id or None)
        self.violations = []  # (time, manifest id, problems)
        self.checked = {}  # manifest id -> number of consistent reads that matched it
        self.error = None

    def run(self):
        try:
            while not self.stop_event.is_set():
                kind, detail = self.observe_once()
                now = time.time()
                ident = None
                if kind == "manifest":
                    ident, problems = detail
                    if problems:
                        self.violations.append((now, ident, problems))
                    else:
                        self.checked[ident] = self.checked.get(ident, 0) + 1
                self.observations.append((now, kind, ident))
                self.stop_event.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - a watcher bug must fail the test, not vanish in a thread
            self.error = exc

    def stop(self):
        self.stop_event.set()
        self.join(timeout=120)
        assert not self.is_alive(), "watcher did not stop"
        assert self.error is None, "watcher crashed: %r" % (self.error,)

    def count(self, start=None, end=None, kinds=None):
        return sum(1 for t, kind, _i in self.observations
                   if (start is None or t >= start) and (end is None or t <= end) and (kinds is None or kind in kinds))

    def states(self):
        """Distinct consecutive states seen: 'absent', 'down', 'torn' or a manifest id."""
        out = []
        for _t, kind, ident in self.observations:
            state = ident if kind == "manifest" else kind
            if not out or out[-1] != state:
                out.append(state)
        return out

    def observe_once(self):
        raise NotImplementedError


class BucketWatcher(Watcher):
    """Reader of ``s3://bucket/prefix`` with its own fail-fast client."""

    def __init__(self, conn, bucket, prefix, interval=0.05):
        super().__init__(interval)
        self.client = fast_client(conn)
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/"
        self.bytes_read = 0
        self.hashed = {}  # (key, etag, last modified, size) -> (size, sha256) of bytes actually read
        self.cache_hits = 0

    def _call(self, func, **kwargs):
        import botocore.exceptions

        try:
            return func(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as exc:
            code = s3.error_code(exc)
            if code in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise _TornReadError() from None
            if code in ("503", "XMinioServerNotInitialized", "SlowDown", "ServiceUnavailable", "500"):
                raise _ServerDownError() from None
            raise
        except (botocore.exceptions.BotoCoreError, ConnectionError, OSError) as exc:
            raise _ServerDownError() from exc

    def _get_sha(self, key):
        """(size, sha256) of the object, or None when it does not exist. The object's bytes are hashed
        once per version (ETag, Last-Modified): a HEAD tells whether the version was already hashed."""
        try:
            head = self._call(self.client.head_object, Key=key)
            version = (key, head["ETag"], head["LastModified"].isoformat(), head["ContentLength"])
            if version in self.hashed:
                self.cache_hits += 1
                return self.hashed[version]
            body = self._call(self.client.get_object, Key=key, IfMatch=head["ETag"])["Body"]
        except _TornReadError:
            return None
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in body.iter_chunks(HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except Exception as exc:  # noqa: BLE001 - a stream cut by the kill is the server being down
            raise _ServerDownError() from exc
        self.bytes_read += size
        self.hashed[version] = (size, digest.hexdigest())
        return self.hashed[version]

    def _listing(self):
        import botocore.exceptions

        listing = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []) or []:
                    listing[obj["Key"][len(self.prefix):]] = obj["Size"]
        except botocore.exceptions.ClientError as exc:
            raise _ServerDownError() from exc  # MinIO answers 503 while it starts
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise _ServerDownError() from exc
        return listing

    def observe_once(self):
        key = self.prefix + MANIFEST
        try:
            try:
                head = self._call(self.client.head_object, Key=key)
            except _TornReadError:
                return "absent", None
            etag = head["ETag"]
            raw = self._call(self.client.get_object, Key=key, IfMatch=etag)["Body"].read()
            manifest = json.loads(raw)
            listing = self._listing()
            problems = []
            for rel, entry in sorted(manifest["files"].items()):
                if rel not in listing:
                    problems.append("%s: listed in the manifest, missing from the bucket" % rel)
                    continue
                got = self._get_sha(self.prefix + rel)
                if got is None:
                    problems.append("%s: listed in the manifest, gone or rewritten while it was read" % rel)
                    continue
                size, sha = got
                if size != entry["size"]:
                    problems.append("%s: %d bytes in the bucket, %d in the manifest" % (rel, size, entry["size"]))
                elif sha != entry["sha256"]:
                    problems.append("%s: sha256 %s in the bucket, %s in the manifest" % (rel, sha, entry["sha256"]))
            again = self._call(self.client.head_object, Key=key)
            if again["ETag"] != etag:
                raise _TornReadError()
        except _TornReadError:
            return "torn", None
        except _ServerDownError:
            return "down", None
        return "manifest", (hashlib.sha256(raw).hexdigest(), problems)


class DirWatcher(Watcher):
    """Reader of a pull destination directory."""

    def __init__(self, root, interval=0.05):
        super().__init__(interval)
        self.root = root

    def _manifest_identity(self, path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def observe_once(self):
        path = os.path.join(self.root, MANIFEST)
        before = self._manifest_identity(path)
        if before is None:
            return "absent", None
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            manifest = json.loads(raw)
            problems = []
            for rel, entry in sorted(manifest["files"].items()):
                full = os.path.join(self.root, *rel.split("/"))
                if not os.path.isfile(full):
                    problems.append("%s: listed in the local manifest, missing" % rel)
                    continue
                size = os.path.getsize(full)
                if size != entry["size"]:
                    problems.append("%s: %d bytes locally, %d in the manifest" % (rel, size, entry["size"]))
                    continue
                sha = sha256_file(full)
                if sha != entry["sha256"]:
                    problems.append("%s: sha256 %s locally, %s in the manifest" % (rel, sha, entry["sha256"]))
        except (FileNotFoundError, ValueError):
            return "torn", None
        if self._manifest_identity(path) != before:
            return "torn", None
        return "manifest", (hashlib.sha256(raw).hexdigest(), problems)


# ---- progress probes: kill after N bytes/parts observed, never after a sleep ---------------------

def multipart_progress(client, bucket, keys):
    """key -> number of parts uploaded so far for the in-progress multipart uploads of ``keys``
    (asked per exact key: MinIO lists uploads only for an exact object name after a restart)."""
    out = {}
    for key in keys:
        for up in client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) or []:
            if up["Key"] != key:
                continue
            try:
                parts = client.list_parts(Bucket=bucket, Key=key, UploadId=up["UploadId"]).get("Parts", []) or []
            except client.exceptions.NoSuchUpload:
                continue  # completed since it was listed
            out[key] = out.get(key, 0) + len(parts)
    return out


def pending_uploads(client, bucket, keys):
    """(key, upload id) of every unfinished multipart upload of ``keys`` (asked per exact key)."""
    out = []
    for key in keys:
        for up in client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) or []:
            if up["Key"] == key:
                out.append((key, up["UploadId"]))
    return out


def partial_files(root):
    """Paths of temporary download files under ``root``."""
    found = []
    for dirpath, _dirs, names in os.walk(root):
        found.extend(os.path.join(dirpath, n) for n in names if n.endswith(PARTIAL_SUFFIX) or n.startswith(".tmp-"))
    return found


def partial_bytes_written(root):
    """Bytes actually written into the temporary download files under ``root``: they are created
    sparse at their final size (ftruncate), so allocated blocks, not st_size, show the progress."""
    total = 0
    for path in partial_files(root):
        try:
            total += os.stat(path).st_blocks * 512
        except FileNotFoundError:
            continue
    return total
