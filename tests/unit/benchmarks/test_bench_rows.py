"""The results.json rows the site and gpu_node_info benchmarks build from their measurements (pure logic)."""

import json
import os

from benchmarks import run_all
from benchmarks.gpu_node_info import run as gpu_bench
from benchmarks.site import run as site_bench

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(run_all.__file__)))
PHASES = {"Cluster prerequisites": "prereqs", "Data services": "data"}


def rerun_callback():
    with open(os.path.join(FIXTURES, "callback_rerun.json"), encoding="utf-8") as handle:
        return json.load(handle)


def no_op(callback):
    for play in callback["plays"]:
        for task in play["tasks"]:
            for host in task["hosts"].values():
                host["changed"] = False
    callback["stats"]["localhost"]["changed"] = 0
    return callback


def test_phases_come_from_site_yml():
    phases = site_bench.phase_of_plays(os.path.join(REPO, "playbooks", "site.yml"))
    assert list(phases.values()) == ["prereqs", "gpu", "data", "gateway", "models", "vllm", "endpoints"]
    assert phases["Cluster prerequisites"] == "prereqs"


def test_summarize_counts_phases_changes_and_slowest_tasks():
    summary = site_bench.summarize(rerun_callback(), PHASES)
    assert summary["phases"] == {"prereqs": {"seconds": 4.5, "changed": 0, "tasks": 2},
                                 "data": {"seconds": 10.0, "changed": 1, "tasks": 1}}
    assert summary["changed"] == 1 and summary["failed"] == 0
    assert summary["changed_tasks"] == [("data", "redis : Render the StatefulSet")]
    assert summary["slowest"][0] == (10.0, "data", "redis : Render the StatefulSet")


def test_rerun_with_changes_is_not_met_and_names_the_tasks():
    first = site_bench.summarize(no_op(rerun_callback()), PHASES)
    rerun = site_bench.summarize(rerun_callback(), PHASES)
    rows = site_bench.rows_for(200.0, first, 40.0, rerun)
    run_all.validate({"benchmark": "site", "date": "2026-11-22T10:00:00Z", "machine": "m", "rows": rows}, "site")
    main = rows[0]
    assert main["metric"] == "site.yml no-op re-run"
    assert (main["ours"], main["anchor"], main["ratio"]) == ("40.0 s", "first run: 200.0 s", 0.2)
    assert main["met"] is False
    assert "changed=1" in main["notes"] and "data: redis : Render the StatefulSet" in main["notes"]
    by_phase = {r["metric"]: r for r in rows[1:]}
    assert by_phase["site.yml re-run, phase data"]["met"] is False
    assert by_phase["site.yml re-run, phase prereqs"]["met"] is True
    assert by_phase["site.yml re-run, phase prereqs"]["ratio"] == 1.0


def test_no_op_rerun_meets_the_goal_only_when_fast_enough():
    first = site_bench.summarize(no_op(rerun_callback()), PHASES)
    rerun = site_bench.summarize(no_op(rerun_callback()), PHASES)
    fast = site_bench.rows_for(200.0, first, 100.0, rerun)[0]
    slow = site_bench.rows_for(200.0, first, 101.0, rerun)[0]
    assert fast["met"] is True and fast["notes"] == "re-run changed=0 (PLAY RECAP)"
    assert slow["met"] is False and slow["ratio"] == 0.505


def test_gpu_rows_compare_medians_with_kubectl():
    samples = {"kubectl": [(10.0, 1), (12.0, 1), (30.0, 1)], "module": [(14.0, 1), (15.0, 1), (19.0, 1)],
               "module+pods": [(20.0, 1), (18.0, 1), (19.0, 1)], "ansible": [(30.0, 1), (32.0, 1)]}
    rows = gpu_bench.result_rows(samples, 208)
    run_all.validate({"benchmark": "gpu_node_info", "date": "2026-11-22T10:00:00Z", "machine": "m", "rows": rows},
                     "gpu")
    assert [r["ratio"] for r in rows] == [1.25, 1.583, 2.583]
    assert [r["met"] for r in rows] == [True, False, None]
    assert rows[0]["anchor"] == "kubectl get nodes -o json: 12.00 s"
    assert rows[0]["ours"] == "15.00 s (median of 3)" and "208 nodes" in rows[0]["metric"]
