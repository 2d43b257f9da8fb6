# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Local files and their SHA-256: the filtered directory scan, hashing in threads, and the hash
cache that reuses a file's SHA-256 while its size, mtime, ctime, inode and device are unchanged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from ansible_collections.llmops.serving.plugins.module_utils.s3_stage_common import (
    HASH_CHUNK,
    StageError,
    _atomic_write_json,
    path_selected,
)


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
            return cached
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
