"""Resumable pulls in module_utils/s3_stage.py: partial file names, the progress log, which bytes a
re-run keeps, which partial files it discards or removes (pure logic, and PartialDownload on real
local files; the transfers themselves are tested against MinIO in tests/integration)."""

import fcntl
import json
import os

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import s3_partial
from ansible_collections.llmops.serving.plugins.module_utils import s3_stage_common as common

MIB = 1024 * 1024
SHA_A = "a" * 64
SHA_B = "b" * 64


def header(size=100, sha=SHA_A, etag="e1", key="m/w.safetensors"):
    return s3_partial.progress_header(key, size, sha, etag)


def log_text(head, *lines):
    return json.dumps(head) + "\n" + "".join(line + "\n" for line in lines)


# ---- names ----------------------------------------------------------------------------------

def test_partial_names_are_stable_hidden_and_excluded_from_scans():
    data, log = s3_partial.partial_names("sub/model.safetensors", 10, SHA_A)
    assert (data, log) == s3_partial.partial_names("sub/model.safetensors", 10, SHA_A)
    assert data.startswith(".model.safetensors.") and data.endswith(common.PARTIAL_SUFFIX)
    assert log == data[:-len(common.PARTIAL_SUFFIX)] + ".progress" + common.PARTIAL_SUFFIX
    # both are left out of scans (push, pull planning, delete_extra) by the built-in exclude
    assert not common.path_selected("sub/" + data, [], common.DEFAULT_EXCLUDE)
    assert not common.path_selected("sub/" + log, [], common.DEFAULT_EXCLUDE)


@pytest.mark.parametrize("other", [("sub/model.safetensors", 11, SHA_A), ("sub/model.safetensors", 10, SHA_B),
                                   ("other/model.safetensors", 10, SHA_A)])
def test_a_new_version_or_another_file_gets_other_partial_names(other):
    assert s3_partial.partial_names(*other)[0] != s3_partial.partial_names("sub/model.safetensors", 10, SHA_A)[0]


def test_long_names_stay_below_name_max():
    data, log = s3_partial.partial_names("d/" + "x" * 250, 1, SHA_A)
    assert len(log) <= 255 and len(data) <= 255
    assert data != s3_partial.partial_names("d/" + "x" * 249 + "y", 1, SHA_A)[0]


# ---- progress log ---------------------------------------------------------------------------

def test_merge_intervals_joins_overlapping_and_touching_ranges():
    assert s3_partial.merge_intervals([(10, 20), (0, 5), (5, 8), (15, 30), (40, 50)]) == [(0, 8), (10, 30), (40, 50)]
    assert s3_partial.merge_intervals([]) == []


def test_parse_progress_returns_the_recorded_ranges_merged():
    text = log_text(header(), "0 10", "10 20", "50 60")
    assert s3_partial.parse_progress(text, header()) == ([(0, 20), (50, 60)], None)


def test_parse_progress_ignores_a_torn_last_line_and_ranges_outside_the_file():
    text = log_text(header(), "0 10", "90 120", "30 20") + "40 4"
    # "40 4" is the start of "40 45" cut by a crash: a torn number is smaller, never a wider claim
    assert s3_partial.parse_progress(text, header()) == ([(0, 10)], None)
    assert s3_partial.parse_progress(log_text(header()) + "7", header()) == ([], None)


@pytest.mark.parametrize("field,value", [("sha256", SHA_B), ("etag", "e2"), ("size", 101), ("key", "m/x")])
def test_parse_progress_discards_a_log_of_another_object(field, value):
    intervals, reason = s3_partial.parse_progress(log_text(header(), "0 10"), dict(header(), **{field: value}))
    assert intervals == [] and "the object changed" in reason and field in reason


@pytest.mark.parametrize("text", ["", "not json\n0 10\n", json.dumps({"format": "other"}) + "\n0 10\n",
                                  json.dumps(dict(header(), version=2)) + "\n0 10\n"])
def test_parse_progress_discards_unreadable_or_foreign_logs(text):
    intervals, reason = s3_partial.parse_progress(text, header())
    assert intervals == [] and reason


def test_covered_prefix_counts_only_bytes_without_a_gap_from_the_offset():
    intervals = [(0, 8), (10, 30)]
    assert s3_partial.covered_prefix(intervals, 0, 5) == 5
    assert s3_partial.covered_prefix(intervals, 0, 10) == 8
    assert s3_partial.covered_prefix(intervals, 12, 100) == 18
    assert s3_partial.covered_prefix(intervals, 8, 5) == 0
    assert s3_partial.covered_prefix([], 0, 5) == 0


def test_resume_ranges_fetch_only_what_each_range_lacks():
    ranges = common.part_ranges(20 * MIB, 5 * MIB)
    # range 1 complete, range 2 half done, range 3 untouched, range 4 complete
    intervals = s3_partial.merge_intervals([(0, 5 * MIB), (5 * MIB, 7 * MIB), (15 * MIB, 20 * MIB)])
    assert s3_partial.resume_ranges(ranges, intervals) == [(5 * MIB, 0), (7 * MIB, 3 * MIB), (10 * MIB, 5 * MIB),
                                                           (20 * MIB, 0)]
    assert s3_partial.resume_ranges(common.part_ranges(0, 5 * MIB), []) == [(0, 0)]


def test_dead_partials_are_the_partial_files_no_download_of_this_run_uses():
    found = ["/d/.a.1.llmops-partial", "/d/.a.1.progress.llmops-partial", "/d/.b.2.llmops-partial",
             "/d/.c.XYZ12345.llmops-partial", "/d/config.json"]
    live = {"/d/.a.1.llmops-partial", "/d/.a.1.progress.llmops-partial"}
    assert s3_partial.dead_partials(found, live) == ["/d/.b.2.llmops-partial", "/d/.c.XYZ12345.llmops-partial"]


# ---- PartialDownload on real files -----------------------------------------------------------

def partial(directory, size=10 * MIB, sha=SHA_A, etag="e1"):
    return s3_partial.PartialDownload(str(directory), "w.safetensors", "m/w.safetensors", size, sha, etag)


def test_a_new_partial_is_sparse_at_full_size_with_a_header_only_log(tmp_path):
    p = partial(tmp_path).open()
    try:
        assert p.intervals == [] and p.discarded is None
        assert os.path.getsize(p.path) == 10 * MIB
        with open(p.log_path, encoding="utf-8") as handle:
            assert json.loads(handle.read()) == header(10 * MIB)
    finally:
        p.close()


def test_marked_ranges_are_kept_by_the_next_open(tmp_path):
    p = partial(tmp_path).open()
    os.pwrite(p.fd, b"x" * MIB, 2 * MIB)
    p.mark(0, 3 * MIB)
    p.mark(3 * MIB, 4 * MIB)
    p.close()
    again = partial(tmp_path).open()
    try:
        assert again.intervals == [(0, 4 * MIB)] and again.kept_bytes() == 4 * MIB and again.discarded is None
        assert os.pread(again.fd, 4, 2 * MIB) == b"xxxx"
        kept = s3_partial.resumable_bytes(str(tmp_path), "w.safetensors", "m/w.safetensors", 10 * MIB, SHA_A, "e1")
        assert kept == 4 * MIB
    finally:
        again.close()


@pytest.mark.parametrize("change", [{"etag": "e2"}, {"size": 11 * MIB}])
def test_a_partial_of_a_changed_object_is_discarded_not_mixed(tmp_path, change):
    p = partial(tmp_path).open()
    os.pwrite(p.fd, b"old" * 100, 0)
    p.mark(0, 300)
    p.close()
    if "size" in change:
        # another size is another partial name: the old one is left for remove_dead_partials
        args = dict(size=change["size"])
    else:
        args = change
    fresh = partial(tmp_path, **args).open()
    try:
        assert fresh.intervals == []
        if "etag" in change:
            assert "the object changed" in fresh.discarded
            assert os.pread(fresh.fd, 3, 0) == b"\0\0\0", "old bytes survived a discard"
    finally:
        fresh.close()


def test_a_data_file_without_its_log_or_of_the_wrong_size_is_discarded(tmp_path):
    p = partial(tmp_path).open()
    p.mark(0, MIB)
    p.close()
    os.truncate(p.path, 5)
    again = partial(tmp_path).open()
    assert again.intervals == [] and "5 bytes" in again.discarded
    again.close()
    os.unlink(p.log_path)
    third = partial(tmp_path).open()
    assert third.intervals == [] and third.discarded == "it has no progress log"
    third.close()


def test_a_partial_held_by_a_live_run_is_refused_not_shared(tmp_path):
    first = partial(tmp_path).open()
    try:
        with pytest.raises(common.StageError, match="another pull is downloading w.safetensors"):
            partial(tmp_path).open()
    finally:
        first.close()
    partial(tmp_path).open().close()  # the lock died with its holder


def test_publish_renames_the_data_and_drops_the_log(tmp_path):
    p = partial(tmp_path, size=3).open()
    os.pwrite(p.fd, b"abc", 0)
    p.mark(0, 3)
    p.publish(str(tmp_path / "w.safetensors"))
    assert (tmp_path / "w.safetensors").read_bytes() == b"abc"
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_remove_dead_partials_spares_live_and_locked_files(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    dead = sub / ".old.0123456789abcdef.llmops-partial"
    dead.write_bytes(b"x" * 8192)
    legacy = tmp_path / ".w.safetensors.k2j3h4.llmops-partial"  # random name of an older version
    legacy.write_bytes(b"y")
    live = partial(tmp_path).open()
    locked = tmp_path / ".busy.fedcba9876543210.llmops-partial"
    locked.write_bytes(b"z")
    holder = os.open(str(locked), os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        removed, freed = s3_partial.remove_dead_partials(str(tmp_path), {live.path, live.log_path})
    finally:
        os.close(holder)
        live.close()
    assert removed == 2 and freed >= 8192
    assert not dead.exists() and not legacy.exists()
    assert locked.exists() and os.path.exists(live.path) and os.path.exists(live.log_path)


def test_a_file_system_without_flock_still_pulls_and_removes_debris(tmp_path, monkeypatch):
    import errno

    def no_locks(_fd, _op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    p = partial(tmp_path).open()
    p.mark(0, MIB)
    p.close()
    debris = tmp_path / ".old.0123456789abcdef.llmops-partial"
    debris.write_bytes(b"x")
    assert s3_partial.remove_dead_partials(str(tmp_path), {p.path, p.log_path})[0] == 1
    again = partial(tmp_path).open()
    assert again.intervals == [(0, MIB)]
    again.close()
