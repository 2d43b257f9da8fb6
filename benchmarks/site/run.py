"""site.yml benchmark: the no-op re-run of playbooks/site.yml against its own first run, in one run.

Against the running sandbox (LLMOPS_SANDBOX_DIR, as `tests/sandbox/sandbox.py env` describes it):

  1. playbooks/teardown.yml -e purge=true        a clean start (namespaces, GPU node labels and the
                                                  staged model weights in the bucket stay, by design)
  2. ansible-playbook playbooks/site.yml -i inventories/sandbox          timed: the first run
  3. the same command again, right after                                timed: the re-run, must change nothing
  4. playbooks/teardown.yml -e purge=true        leaves the sandbox purged-clean (also after a failure;
                                                  --keep skips it)

Both runs use the json stdout callback: the PLAY RECAP counts give changed=, the play and task
durations give the time per phase (one play per phase in site.yml). Wall time is a monotonic clock
around each ansible-playbook process (start-up included).

Writes benchmarks/site/RESULTS.md and benchmarks/site/results.json (format: benchmarks/run_all.py).

Usage:
  python benchmarks/site/run.py            # two site.yml runs and two purging teardowns: 15-40 min on 2 cores
  python benchmarks/site/run.py --keep     # leave the platform deployed (no final teardown)
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from benchmarks.run_all import machine, row, utc_now, write_results  # noqa: E402 - after the repository root is on sys.path
from tests.helpers.sandbox import load_env, process_env  # noqa: E402 - after the repository root is on sys.path

PLAYBOOKS = os.path.join(REPO, "playbooks")
INVENTORY = os.path.join(REPO, "inventories", "sandbox")
GOAL_FRACTION = 0.5
RATIO_MEANS = "ours/anchor (re-run time as a fraction of the first run; below 1: the re-run is faster)"


# ---- pure: reading the json callback output ----------------------------------------------------
def phase_of_plays(site_path):
    """{play name: phase} from site.yml's import_playbook entries ('Phase gpu' -> gpu)."""
    with open(site_path, encoding="utf-8") as handle:
        entries = yaml.safe_load(handle)
    out = {}
    for entry in entries:
        target = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        if not target:
            continue
        phase = (entry.get("tags") or [os.path.splitext(os.path.basename(target))[0]])[0]
        with open(os.path.join(os.path.dirname(site_path), target), encoding="utf-8") as handle:
            for play in yaml.safe_load(handle):
                out[play.get("name", target)] = phase
    return out


def _seconds(duration):
    def parse(text):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if not duration.get("start") or not duration.get("end"):
        return 0.0
    return (parse(duration["end"]) - parse(duration["start"])).total_seconds()


def summarize(callback, phases):
    """Phases, changed tasks and slowest tasks of one ansible-playbook run (json callback output).

    Returns {"phases": {phase: {"seconds", "changed", "tasks"}}, "changed_tasks": [(phase, task)],
    "changed": PLAY RECAP changed= summed over hosts, "failed": failed+unreachable, "slowest": [(s, phase, task)]}.
    """
    out = {"phases": {}, "changed_tasks": [], "slowest": []}
    for play in callback.get("plays", []):
        name = play["play"]["name"]
        phase = phases.get(name, name)
        entry = out["phases"].setdefault(phase, {"seconds": 0.0, "changed": 0, "tasks": 0})
        entry["seconds"] += _seconds(play["play"].get("duration", {}))
        for task in play.get("tasks", []):
            entry["tasks"] += 1
            task_name = task["task"]["name"]
            out["slowest"].append((_seconds(task["task"].get("duration", {})), phase, task_name))
            if any(host.get("changed") for host in task["hosts"].values()):
                entry["changed"] += 1
                out["changed_tasks"].append((phase, task_name))
    out["slowest"].sort(key=lambda item: -item[0])
    stats = callback.get("stats", {})
    out["changed"] = sum(host.get("changed", 0) for host in stats.values())
    out["failed"] = sum(host.get("failures", 0) + host.get("unreachable", 0) for host in stats.values())
    return out


def rows_for(first_seconds, first, rerun_seconds, rerun):
    """results.json rows: the whole re-run, then one per phase."""
    ratio = rerun_seconds / first_seconds
    changed_names = ["%s: %s" % item for item in rerun["changed_tasks"]]
    if rerun["changed"]:
        notes = "re-run changed=%d, NOT a no-op; changed tasks: %s" % (rerun["changed"], "; ".join(changed_names))
    else:
        notes = "re-run changed=0 (PLAY RECAP)"
    out = [row("site.yml no-op re-run", "%.1f s" % rerun_seconds, "first run: %.1f s" % first_seconds,
               round(ratio, 3), RATIO_MEANS, "<= %.1f and changed=0" % GOAL_FRACTION,
               rerun["changed"] == 0 and ratio <= GOAL_FRACTION, notes)]
    for phase, entry in first["phases"].items():
        again = rerun["phases"].get(phase)
        if again is None:
            out.append(row("site.yml re-run, phase %s" % phase, "not run", "first run: %.1f s" % entry["seconds"],
                           None, RATIO_MEANS, "changed=0 (time: breakdown only)", False,
                           "the phase did not run again"))
            continue
        phase_ratio = again["seconds"] / entry["seconds"] if entry["seconds"] else None
        out.append(row("site.yml re-run, phase %s" % phase, "%.1f s" % again["seconds"],
                       "first run: %.1f s" % entry["seconds"],
                       None if phase_ratio is None else round(phase_ratio, 3), RATIO_MEANS,
                       "changed=0 (time: breakdown only)", again["changed"] == 0,
                       "%d tasks changed" % again["changed"] if again["changed"] else ""))
    return out


# ---- running -----------------------------------------------------------------------------------
def ansible_playbook(name, env, logdir, *args):
    """(wall seconds, rc, stdout) of one ansible-playbook run; output kept in logdir."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), os.path.join(PLAYBOOKS, name),
           "-i", INVENTORY, *args]
    label = "%s%s" % (os.path.splitext(name)[0], "-".join([""] + [a for a in args if not a.startswith("-")]))
    out_path = os.path.join(logdir, "%s-%d.out" % (label, int(time.time())))
    started = time.monotonic()
    with open(out_path, "w", encoding="utf-8") as out, open(out_path + ".err", "w", encoding="utf-8") as err:
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=out, stderr=err, check=False)
    elapsed = time.monotonic() - started
    with open(out_path, encoding="utf-8") as handle:
        stdout = handle.read()
    print("%s %s: exit %d after %.1f s (output: %s)" % (name, " ".join(args), proc.returncode, elapsed, out_path),
          flush=True)
    return elapsed, proc.returncode, stdout


def parse_callback(stdout, what, out_path_hint):
    try:
        return json.loads(stdout)
    except ValueError:
        raise RuntimeError("%s: no json callback output (see %s)" % (what, out_path_hint)) from None


def failed_tasks(callback):
    out = []
    for play in callback.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task["hosts"].items():
                if result.get("failed") or result.get("unreachable"):
                    out.append("%s on %s: %s" % (task["task"]["name"], host, result.get("msg", "")))
    return out


def site_run(env, logdir, what):
    seconds, rc, stdout = ansible_playbook("site.yml", env, logdir)
    callback = parse_callback(stdout, what, logdir)
    if rc != 0:
        raise RuntimeError("%s of site.yml failed (exit %d): %s (logs: %s)"
                           % (what, rc, "; ".join(failed_tasks(callback)) or "see the log", logdir))
    return seconds, callback


def teardown(env, logdir):
    seconds, rc, stdout = ansible_playbook("teardown.yml", env, logdir, "-e", "purge=true")
    if rc != 0:
        callback = json.loads(stdout) if stdout.strip().startswith("{") else {}
        raise RuntimeError("teardown.yml -e purge=true failed (exit %d): %s (logs: %s)"
                           % (rc, "; ".join(failed_tasks(callback)) or "see the log", logdir))
    return seconds


def results_md(first_seconds, first, rerun_seconds, rerun, teardown_seconds, rows, versions):
    lines = [
        "# site.yml benchmark",
        "",
        "Generated by `benchmarks/site/run.py` (`make bench`); do not edit by hand.",
        "",
        "Question: after `playbooks/site.yml` has set up the sandbox platform, how long does the immediate "
        "re-run take, and does it change nothing? Goal: changed=0 and at most %.1f of the first run's time "
        "(a no-op run only reads state; half of a first run that also creates, waits for rollouts and stages "
        "the model leaves room for the Helm and Kubernetes reads every phase must still do)." % GOAL_FRACTION,
        "",
        "Result: re-run %.1f s = **%.2f** of the first run's %.1f s, changed=%d: goal %s." % (
            rerun_seconds, rerun_seconds / first_seconds, first_seconds, rerun["changed"],
            "met" if rows[0]["met"] else "NOT met"),
        "",
        "| phase | first run s | tasks | changed tasks | re-run s | changed tasks | re-run / first |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, entry in first["phases"].items():
        again = rerun["phases"].get(phase, {"seconds": 0.0, "tasks": 0, "changed": 0})
        lines.append("| %s | %.1f | %d | %d | %.1f | %d | %s |" % (
            phase, entry["seconds"], entry["tasks"], entry["changed"], again["seconds"], again["changed"],
            "%.2f" % (again["seconds"] / entry["seconds"]) if entry["seconds"] else "-"))
    lines.append("| **whole playbook (wall clock)** | %.1f | | %d (changed=%d) | %.1f | %d (changed=%d) | %.2f |" % (
        first_seconds, len(first["changed_tasks"]), first["changed"], rerun_seconds, len(rerun["changed_tasks"]),
        rerun["changed"], rerun_seconds / first_seconds))
    lines += ["", "Changed tasks in the re-run: %s." % (
        "; ".join("%s: %s" % item for item in rerun["changed_tasks"]) if rerun["changed_tasks"] else "none")]
    lines += ["", "Slowest tasks of the re-run (where the no-op time goes):", ""]
    lines += ["- %.1f s %s: %s" % item for item in rerun["slowest"][:8]]
    lines += [
        "",
        "## Setup",
        "",
        "- Sandbox: real kube-apiserver, kwok GPU nodes, MinIO, the LLM Engine gateway stand-in; inventory "
        "`inventories/sandbox`. Clean start: `playbooks/teardown.yml -e purge=true` (%.1f s), which keeps "
        "namespaces, GPU node labels and the staged model weights in the bucket, so the first run re-checks "
        "those rather than creating them. The same teardown runs at the end." % teardown_seconds,
        "- Times: wall clock around each `ansible-playbook` process (start-up included); per phase the play's "
        "duration from the json stdout callback (first task start to last task end).",
        "- %s" % versions,
        "- Machine: %s." % machine(),
        "- Date: %s" % utc_now(),
        "",
    ]
    return "\n".join(lines)


def versions(env):
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "--version"], env=env,
                          capture_output=True, text=True, check=False)
    first_line = (proc.stdout.splitlines() or ["ansible ?"])[0]
    return "%s, Python %s" % (first_line, sys.version.split()[0])


def main():
    parser = argparse.ArgumentParser(description="site.yml first run vs no-op re-run on the sandbox")
    parser.add_argument("--keep", action="store_true", help="leave the platform deployed (no final teardown)")
    parser.add_argument("--output-dir", default=HERE, help="where RESULTS.md and results.json go")
    opts = parser.parse_args()

    load_env()  # fails with the fix when the sandbox is not up
    env = process_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOCALHOST_WARNING": "False",
                       "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    logdir = tempfile.mkdtemp(prefix="bench-site-")
    phases = phase_of_plays(os.path.join(PLAYBOOKS, "site.yml"))
    try:
        teardown_seconds = teardown(env, logdir)
        first_seconds, first_cb = site_run(env, logdir, "first run")
        rerun_seconds, rerun_cb = site_run(env, logdir, "re-run")
        first, rerun = summarize(first_cb, phases), summarize(rerun_cb, phases)
        rows = rows_for(first_seconds, first, rerun_seconds, rerun)
        text = results_md(first_seconds, first, rerun_seconds, rerun, teardown_seconds, rows, versions(env))
        with open(os.path.join(opts.output_dir, "RESULTS.md"), "w", encoding="utf-8") as handle:
            handle.write(text)
        write_results(opts.output_dir, rows, name="site")
        print(text)
    finally:
        # leave the sandbox purged-clean for whoever comes next, also after a failure
        if not opts.keep:
            teardown(env, logdir)
    shutil.rmtree(logdir)  # kept when something failed: the error names it
    return 0


if __name__ == "__main__":
    sys.exit(main())
