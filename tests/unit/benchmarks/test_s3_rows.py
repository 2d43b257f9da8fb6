"""The results.json rows the S3 benchmark builds from its measurements (pure logic)."""

import os

import pytest

from benchmarks import run_all
from benchmarks.s3 import run as s3_bench

GIB = 1024 ** 3


class FakeRun(object):
    def __init__(self, seconds, work=None, client_cpu=None, server_cpu=None):
        self.seconds = seconds
        self.work = work
        self.client_cpu = client_cpu
        self.server_cpu = server_cpu


def rows():
    row = s3_bench.measured_row
    return [
        row("s5cmd", "push", FakeRun(21.0, 19.9, 16.0, 19.0), 4 * GIB),
        row("ours", "push", FakeRun(20.5, 18.0, 13.0, 18.0), 4 * GIB),
        row("aws-cli", "push", FakeRun(19.6, 18.5, 11.0, 17.0), 4 * GIB),
        row("s3_sync", "push", FakeRun(40.0, None, 20.0, 18.5), 4 * GIB),
        row("s5cmd", "push", FakeRun(19.0, 18.0, 15.0, 18.2), 4 * GIB),  # second round: s5cmd's best
        row("ours", "no-op", FakeRun(1.8, 0.07, 1.7, 0.0), 0),
        row("s5cmd", "no-op", FakeRun(1.3, 0.19, 1.2, 0.0), 0),
        row("ours", "pull", FakeRun(7.5, 6.2, 6.0, 5.0), 4 * GIB),
        row("s5cmd", "pull", FakeRun(8.0, 7.0, 7.5, 3.4), 4 * GIB),
        row("s3_sync", "pull", None, 0, "no pull mode"),
    ]


def by_metric(out, start):
    found = [r for r in out if r["metric"].startswith(start)]
    assert len(found) == 1, [r["metric"] for r in out]
    return found[0]


def test_parse_delta():
    assert s3_bench.parse_delta("0:00:01.500000") == pytest.approx(1.5)
    assert s3_bench.parse_delta("1:02:03.25") == pytest.approx(3723.25)


def test_best_rows_take_each_tools_fastest_round_and_skip_missing_phases():
    best = s3_bench.best_rows(rows())
    assert best[("s5cmd", "push")]["seconds"] == 19.0
    assert ("s3_sync", "pull") not in best
    assert s3_bench.best_work(rows())[("s5cmd", "push")] == 18.0


def test_goal_rows_compare_ansible_task_wall_times():
    out = s3_bench.goal_rows(rows(), 4 * GIB, None, "4 GiB", 2)
    push = by_metric(out, "push, 4 GiB")
    assert push["ratio"] == pytest.approx(19.0 / 20.5, abs=1e-3) and push["met"] is False
    assert "own time: ours 18.00 s" in push["notes"] and "s5cmd cp 18.00 s = 1.00x" in push["notes"]
    pull = by_metric(out, "verified pull")
    assert pull["ratio"] == pytest.approx(8.0 / 7.5, abs=1e-3) and pull["met"] is True and pull["goal"] == ">= 0.9x"
    noop = by_metric(out, "no-op re-run")
    assert noop["met"] is False and "MiB/s" not in noop["ours"]
    assert by_metric(out, "push vs community.aws.s3_sync")["ratio"] == pytest.approx(40.0 / 20.5, abs=1e-3)
    doc = {"benchmark": "s3", "date": "2026-11-22T00:00:00Z", "machine": "m", "rows": out}
    run_all.validate(doc, "s3/results.json")


def test_push_floor_is_the_cheapest_push_for_minio_over_the_cores():
    assert s3_bench.push_floor(rows(), 2) == pytest.approx(17.0 / 2)
    floor = by_metric(s3_bench.goal_rows(rows(), 4 * GIB, None, "4 GiB", 2), "push floor")
    # 3x over aws-cli (19.6 s) would need 6.53 s, below the 8.5 s floor: at most 19.6 / 8.5 = 2.31x
    assert "3x over aws s3 sync (19.60 s) needs 6.53 s: below the bound; at most 2.31x" in floor["notes"]
    # 3x over s3_sync (40 s) would need 13.33 s: MinIO alone does not exclude it
    assert "community.aws.s3_sync (40.00 s) needs 13.33 s: above the bound; at most 4.71x" in floor["notes"]
    assert floor["met"] is None


def test_hashing_twice_raises_the_bound():
    # 4 CPU s per SHA-256 pass over the data set: floor 8.5 s + 2 x 4 / 2 cores = 12.5 s
    floor = by_metric(s3_bench.goal_rows(rows(), 4 * GIB, None, "4 GiB", 2, sha_cpu=4.0), "push floor")
    assert "hashing every byte twice" in floor["notes"] and ": 12.50 s" in floor["notes"]
    assert "community.aws.s3_sync (40.00 s) needs 13.33 s: above the bound; at most 3.20x" in floor["notes"]
    assert "aws s3 sync (19.60 s) needs 6.53 s: below the bound; at most 1.57x" in floor["notes"]


def test_no_server_figures_no_floor_row():
    plain = [dict(r, server_cpu=None) for r in rows()]
    assert s3_bench.push_floor(plain, 2) is None
    assert not [r for r in s3_bench.goal_rows(plain, 4 * GIB, None, "4 GiB", 2) if r["metric"].startswith("push floor")]


def test_resume_row_goal():
    resume = {"landed_at_kill": 0.56 * 4 * GIB, "resent_fraction": 0.469, "seconds": 13.6, "module_seconds": 10.7}
    row = by_metric(s3_bench.goal_rows(rows(), 4 * GIB, resume, "4 GiB", 2), "resume")
    assert row["met"] is True and row["ours"] == "46.9 % of the data set"
    resume["resent_fraction"] = 0.6
    assert by_metric(s3_bench.goal_rows(rows(), 4 * GIB, resume, "4 GiB", 2), "resume")["met"] is False


def pull_resume(fraction, landed, refetched, resumed):
    return {"fraction": fraction, "landed_at_kill": landed * 4 * GIB, "refetched": refetched * 4 * GIB,
            "refetched_fraction": refetched, "resumed": resumed * 4 * GIB, "seconds": 9.0, "module_seconds": 6.5}


def test_pull_resume_rows_sit_next_to_the_push_resume_row_with_their_goals():
    resume = {"landed_at_kill": 0.56 * 4 * GIB, "resent_fraction": 0.469, "seconds": 13.6, "module_seconds": 10.7}
    pulls = [pull_resume(0.5, 0.51, 0.505, 0.495), pull_resume(0.99, 0.992, 0.021, 0.979)]
    out = s3_bench.goal_rows(rows(), 4 * GIB, resume, "4 GiB", 2, None, pulls)
    metrics = [r["metric"] for r in out]
    assert metrics.index("pull resume after a kill at ~50 %: bytes re-fetched") == metrics.index(
        "resume after a kill: bytes re-sent") + 1
    half = by_metric(out, "pull resume after a kill at ~50 %")
    assert half["goal"] == "<= 55 % re-fetched" and half["met"] is True
    assert half["ours"] == "50.5 % of the data set" and half["anchor"] == "bytes not on disk at the kill: 49.0 %"
    assert half["ratio"] == pytest.approx(0.49 / 0.505, abs=1e-3)
    assert "51.0 % of the bytes in its partial files" in half["notes"] and "kept 49.5 %" in half["notes"]
    late = by_metric(out, "pull resume after a kill at ~99 %")
    assert late["goal"] == "<= 5 % re-fetched" and late["met"] is True


@pytest.mark.parametrize("fraction,refetched", [(0.5, 0.56), (0.99, 0.051)])
def test_pull_resume_row_misses_its_goal_when_too_much_is_fetched_again(fraction, refetched):
    row = s3_bench.pull_resume_row(pull_resume(fraction, fraction, refetched, 1 - refetched), 4 * GIB,
                                   dict(s3_bench.PULL_RESUME_GOALS)[fraction])
    assert row["met"] is False


def test_pull_resume_row_of_a_rerun_that_fetched_nothing_has_no_ratio():
    row = s3_bench.pull_resume_row(pull_resume(0.99, 1.0, 0.0, 1.0), 4 * GIB, 0.05)
    assert row["ratio"] is None and row["met"] is True


def test_no_pull_resume_rows_without_measurements():
    out = s3_bench.goal_rows(rows(), 4 * GIB, None, "4 GiB", 2)
    assert not [r for r in out if r["metric"].startswith("pull resume")]


def test_partial_data_bytes_counts_written_blocks_of_data_files_only(tmp_path):
    sub = tmp_path / "extra"
    sub.mkdir()
    data = sub / ".w.bin.0123456789abcdef.llmops-partial"
    with open(data, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: nothing written yet
    assert s3_bench.partial_data_bytes(str(tmp_path)) < 64 * 1024
    with open(data, "r+b") as handle:
        handle.write(b"x" * 1024 * 1024)
        handle.flush()
        os.fsync(handle.fileno())
    (sub / ".w.bin.0123456789abcdef.progress.llmops-partial").write_bytes(b"y" * 300000)
    (tmp_path / "config.json").write_bytes(b"z" * 300000)
    assert 1024 * 1024 <= s3_bench.partial_data_bytes(str(tmp_path)) < 1024 * 1024 + 64 * 1024
