# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Parallel transfers: ``TransferEngine`` uploads (single PUT or resumable multipart, with the
``UploadJournal`` of our multipart uploads) and downloads (ranged GETs into resumable partials).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.llmops.serving.plugins.module_utils.s3 import (
    ClientError,
    describe_s3_error,
    error_code,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_body import (
    OrderedHasher,
    PartBody,
    _CancelledError,
    _SpliceUnsupportedError,
    body_reader,
    read_part,
    release_body,
    splice_body,
    splice_target,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_manifest import (
    resume_parts,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_partial import (
    PartialDownload,
    resume_ranges,
)
from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    HASH_CHUNK,
    StageError,
    _atomic_write_json,
    interleave,
    object_key,
    part_ranges,
    part_size_for,
    uses_multipart,
)

# Downloads move through one reused 128 KiB buffer per worker: the socket is read straight into it
# and it is pwritten while still in the CPU cache. Measured on the benchmark box (2 cores, MinIO
# local, 4 GiB pull): 12-13 CPU s with botocore's 1 MiB chunks (a new bytes object per chunk,
# copied by urllib3), 7.5-8 CPU s this way, of which ~2.5 s is SHA-256.
DOWNLOAD_CHUNK = 128 * 1024
# Every PULL_CHECKPOINT bytes of a ranged GET (and at its end) the file's data is fdatasync'ed and the
# range appended to the progress log (written O_DSYNC): a kill loses at most this much per request in
# flight. Measured on the benchmark box (16 writers, 2 GiB): fdatasync every 4 MiB was within the
# noise of no fdatasync at all.
PULL_CHECKPOINT = 4 * 1024 * 1024


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
