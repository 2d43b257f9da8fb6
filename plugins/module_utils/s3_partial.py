# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Resumable pulls: the partial file and its progress log next to each file being downloaded, which
byte ranges already reached the disk (pure), and the removal of partials no pull will resume.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import hashlib
import json
import os

from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    PARTIAL_SUFFIX,
    StageError,
)

# A pull downloads a file into ``.<name>.<id>.llmops-partial`` next to it and appends the byte ranges
# that reached the disk to ``.<name>.<id>.progress.llmops-partial``, so that a re-run after a kill,
# a reboot or a dead server fetches only what is missing (``<id>``: path, size and manifest SHA-256).
PROGRESS_SUFFIX = ".progress" + PARTIAL_SUFFIX
PROGRESS_FORMAT = "llmops.serving/pull-progress"
# Names longer than this are cut in partial file names (the id keeps them apart; NAME_MAX is 255).
PARTIAL_NAME_KEEP = 160


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
