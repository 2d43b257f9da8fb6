# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Moving one part's bytes: reading a part from disk for an upload, receiving a ranged GET's body into
a file (through a reused buffer, or with splice(2) over plain HTTP), and hashing parts in order.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import os
import select
import threading

from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    StageError,
)

# Hashing a downloaded part reads it back from the page cache in chunks this size, into a reused buffer.
REHASH_CHUNK = 256 * 1024
# Over plain HTTP on Linux a ranged GET's body goes socket -> pipe -> file with splice(2): the kernel
# moves it into the page cache without the copy through our buffer. Measured on the benchmark box
# (4 x 1 GiB, 8 workers, no hashing): 1.9-2.2 s system CPU and 3.9-4.4 s instead of 3.0-3.9 s and
# 5.1-6.4 s. TLS sockets (the bytes must be decrypted in user space) and platforms without
# os.splice use the buffer path (DOWNLOAD_CHUNK, s3_transfer.py).
SPLICE_CHUNK = 1024 * 1024
# Least bytes a PartBody read hands to urllib3 / botocore (see PartBody).
SEND_CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031  # fcntl.h on Linux; Python's fcntl module names it only since 3.10


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
