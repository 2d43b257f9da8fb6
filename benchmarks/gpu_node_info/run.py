"""gpu_node_info benchmark: the module against `kubectl get nodes -o json` on the same cluster, in one run.

Adds N kwok nodes (default 2,000) to the sandbox, cycling through the GPU labeling schemes of
tests/sandbox/nodes.yaml, each with a unique name prefix, the kwok annotation and the taint
llmops.bench/only=true:NoSchedule (so no other test's pod lands there), waits until kwok reports them
Ready, then measures in alternating order, R rounds each:

  kubectl        kubectl get nodes -o json (pages of 500, like the module), output drained from a pipe
  module         the module exactly as Ansible runs it on the target: the AnsiballZ payload Ansible
                 built for this call (kept with ANSIBLE_KEEP_REMOTE_FILES), run with the venv python
  module+pods    the same with include_allocations: true (adds the paginated pod list)
  ansible        `ansible localhost -m llmops.serving.gpu_node_info` end to end (controller included)

Wall time comes from a monotonic clock around each process, peak RSS from wait4() of that process.
The nodes are deleted at the end (also after a failure); --keep leaves them.
Writes benchmarks/gpu_node_info/RESULTS.md and results.json (format: benchmarks/run_all.py): one row per
command against kubectl's median.

Usage:
  python benchmarks/gpu_node_info/run.py                 # 2,000 nodes, 5 rounds
  python benchmarks/gpu_node_info/run.py --nodes 200 --rounds 3   # quick look
"""

import argparse
import copy
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from tests.conftest import _link_collection  # noqa: E402 - after the repository root is on sys.path

_link_collection()
from ansible_collections.llmops.serving.plugins.module_utils.gpu_node import gpu_resource_vendor  # noqa: E402 - after the repository root is on sys.path

from benchmarks.run_all import machine, row, write_results  # noqa: E402 - after the repository root is on sys.path
from tests.helpers.sandbox import load_env, process_env  # noqa: E402 - after the repository root is on sys.path

VENV_PY = sys.executable
VENV_BIN = os.path.dirname(VENV_PY)
RUN_LABEL = "llmops.bench/run"
TAINT = {"key": "llmops.bench/only", "value": "true", "effect": "NoSchedule"}
GOAL_RATIO = 1.5
RATIO_MEANS = "ours/anchor (median time; below 1: ours faster)"


# ---- nodes -----------------------------------------------------------------------------------
def node_templates():
    with open(os.path.join(REPO, "tests", "sandbox", "nodes.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["items"]


def bench_node(template, name, run_id):
    node = copy.deepcopy(template)
    meta = node["metadata"]
    meta["name"] = name
    meta.setdefault("labels", {})
    meta["labels"]["kubernetes.io/hostname"] = name
    meta["labels"][RUN_LABEL] = run_id
    meta.setdefault("annotations", {})["kwok.x-k8s.io/node"] = "fake"
    spec = node.setdefault("spec", {})
    spec["taints"] = list(spec.get("taints") or []) + [TAINT]
    return node


def create_nodes(env, count, run_id):
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
    templates = node_templates()
    prefix = "bench-gpu-%s-" % run_id
    bodies = [bench_node(templates[i % len(templates)], "%s%05d" % (prefix, i), run_id) for i in range(count)]

    def create(body):
        for attempt in range(5):
            try:
                api.create_node(body)
                return
            except client.ApiException as exc:
                if exc.status == 409:
                    return
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, bodies))
    gpu_nodes = sum(1 for body in bodies if any(gpu_resource_vendor(r) for r in body["status"]["allocatable"]))
    return api, time.monotonic() - started, gpu_nodes


def wait_ready(api, run_id, count, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = 0
        token = None
        while True:
            kwargs = {"label_selector": "%s=%s" % (RUN_LABEL, run_id), "limit": 500, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            body = json.loads(api.list_node(**kwargs).data)
            for node in body["items"]:
                conds = node.get("status", {}).get("conditions") or []
                ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            token = body["metadata"].get("continue")
            if not token:
                break
        if ready >= count:
            return
        time.sleep(3)
    raise RuntimeError("only %d of %d benchmark nodes became Ready" % (ready, count))


def delete_nodes(env, selector, timeout=900):
    """DELETE collection calls until no node matches (kubectl deletes node by node: minutes for 2,000).

    On a loaded server one call can end in 504 after its 60s budget with part of the work done; it
    is simply repeated.
    """
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=env["KUBECONFIG"]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.delete_collection_node(label_selector=selector, _request_timeout=120)
        except client.ApiException as exc:
            if exc.status not in (500, 503, 504):
                raise
        left = api.list_node(label_selector=selector, limit=1)
        if not left.items:
            return
        time.sleep(2)
    raise RuntimeError("benchmark nodes (%s) still present after %ss: delete them with kubectl delete nodes -l %s"
                       % (selector, timeout, selector))


# ---- measuring -------------------------------------------------------------------------------
def measure(cmd, env):
    """(seconds, peak RSS MiB, stdout bytes) of one process, stdout drained through a pipe."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%s): %s %s" % (cmd[0], proc.returncode, out[-2000:], err[-2000:]))
    return elapsed, usage.ru_maxrss / 1024.0, out


def build_ansiballz(env, args, workdir):
    """Run the module once through Ansible, keeping the AnsiballZ payload it executed."""
    remote = os.path.join(workdir, "remote-%s" % uuid.uuid4().hex[:6])
    run_env = dict(env, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_REMOTE_TMP=remote,
                   ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    cmd = adhoc_command(args)
    elapsed, rss, _out = measure(cmd, run_env)
    found = glob.glob(os.path.join(remote, "ansible-tmp-*", "AnsiballZ_gpu_node_info.py"))
    if len(found) != 1:
        raise RuntimeError("AnsiballZ payload not found under %s" % remote)
    return found[0]


def adhoc_command(args):
    return [os.path.join(VENV_BIN, "ansible"), "localhost", "-c", "local", "-o",
            "-m", "llmops.serving.gpu_node_info", "-a", json.dumps(args),
            "-e", "ansible_python_interpreter=%s" % VENV_PY]


def summary_row(name, samples, kubectl_median=None):
    times = [s[0] for s in samples]
    rss = [s[1] for s in samples]
    median = statistics.median(times)
    ratio = "%.2f" % (median / kubectl_median) if kubectl_median else "1.00"
    return "| %s | %d | %.2f | %.2f | %.2f | %.0f | %s |" % (
        name, len(samples), median, min(times), max(times), statistics.median(rss), ratio)


def result_rows(samples, total_nodes):
    """results.json rows: module, module with include_allocations, end to end, each against kubectl's median."""
    kubectl_median = statistics.median(s[0] for s in samples["kubectl"])
    anchor = "kubectl get nodes -o json: %.2f s" % kubectl_median
    goal = "<= %.1fx" % GOAL_RATIO
    rows = []
    for key, metric, row_goal, notes in (
            ("module", "gpu_node_info, %d nodes (module process)" % total_nodes, goal, ""),
            ("module+pods", "gpu_node_info include_allocations, %d nodes (module process)" % total_nodes, goal,
             "also lists pods (few here: the benchmark nodes are tainted); the anchor lists nodes only"),
            ("ansible", "ansible localhost -m gpu_node_info, %d nodes (end to end)" % total_nodes,
             "none (informational)", "includes the Ansible controller start-up and AnsiballZ packaging")):
        median = statistics.median(s[0] for s in samples[key])
        ratio = median / kubectl_median
        met = ratio <= GOAL_RATIO if row_goal == goal else None
        rows.append(row(metric, "%.2f s (median of %d)" % (median, len(samples[key])), anchor, round(ratio, 3),
                        RATIO_MEANS, row_goal, met, notes))
    return rows


def main():
    parser = argparse.ArgumentParser(description="gpu_node_info vs kubectl get nodes -o json")
    parser.add_argument("--nodes", type=int, default=2000, help="kwok nodes to add (default 2000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--adhoc-rounds", type=int, default=2, help="rounds of the end-to-end ansible call")
    parser.add_argument("--keep", action="store_true", help="leave the benchmark nodes in the cluster")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"),
                        help="RESULTS.md path; results.json goes next to it")
    opts = parser.parse_args()

    senv = load_env()
    env = process_env({"ANSIBLE_LOCALHOST_WARNING": "False"})
    run_id = uuid.uuid4().hex[:6]
    # nodes of an earlier, interrupted benchmark run
    delete_nodes(senv, RUN_LABEL)
    workdir = tempfile.mkdtemp(prefix="bench-gpu-")
    try:
        api, create_seconds, gpu_bench_nodes = create_nodes(senv, opts.nodes, run_id)
        print("created %d nodes in %.1fs" % (opts.nodes, create_seconds), flush=True)
        wait_ready(api, run_id, opts.nodes)
        print("all Ready", flush=True)

        kubectl_cmd = [senv["SANDBOX_KUBECTL"], "get", "nodes", "-o", "json", "--chunk-size=500"]
        args = {"page_size": 500}
        args_pods = {"page_size": 500, "include_allocations": True}
        payload = build_ansiballz(env, args, workdir)
        payload_pods = build_ansiballz(env, args_pods, workdir)
        module_cmd = [VENV_PY, payload]
        module_pods_cmd = [VENV_PY, payload_pods]

        # warm-up (page cache, apiserver watch cache), not counted
        _t, _r, kubectl_out = measure(kubectl_cmd, env)
        _t, _r, module_out = measure(module_cmd, env)
        total_nodes = len(json.loads(kubectl_out)["items"])
        result = json.loads(module_out)
        if result["summary"]["nodes_total"] != total_nodes:
            raise RuntimeError("module saw %s nodes, kubectl %s" % (result["summary"]["nodes_total"], total_nodes))
        bench_gpu = sum(1 for n in result["nodes"] if n["name"].startswith("bench-gpu-%s-" % run_id))
        if bench_gpu != gpu_bench_nodes:
            raise RuntimeError("module classified %d benchmark GPU nodes, expected %d" % (bench_gpu, gpu_bench_nodes))

        samples = {"kubectl": [], "module": [], "module+pods": [], "ansible": []}
        for round_no in range(opts.rounds):
            order = [("kubectl", kubectl_cmd), ("module", module_cmd), ("module+pods", module_pods_cmd)]
            if round_no % 2:
                order.reverse()
            for name, cmd in order:
                elapsed, rss, _out = measure(cmd, env)
                samples[name].append((elapsed, rss))
            print("round %d: %s" % (round_no + 1, ", ".join(
                "%s %.2fs" % (k, v[-1][0]) for k, v in samples.items() if v)), flush=True)
        for _i in range(opts.adhoc_rounds):
            elapsed, rss, _out = measure(adhoc_command(args), env)
            samples["ansible"].append((elapsed, rss))

        kubectl_median = statistics.median(s[0] for s in samples["kubectl"])
        module_median = statistics.median(s[0] for s in samples["module"])
        ratio = module_median / kubectl_median
        json_bytes = len(kubectl_out)
        version = json.loads(subprocess.run([senv["SANDBOX_KUBECTL"], "version", "-o", "json"], env=env,
                                            capture_output=True, text=True, check=False).stdout or "{}")
        lines = [
            "# gpu_node_info benchmark",
            "",
            "Generated by `benchmarks/gpu_node_info/run.py` (`make bench`); do not edit by hand.",
            "",
            "Question: how long does one `llmops.serving.gpu_node_info` call take on a large cluster, "
            "compared with `kubectl get nodes -o json` in the same run? Goal: at most %.1fx kubectl's time."
            % GOAL_RATIO,
            "",
            "| command | runs | median s | min s | max s | peak RSS MiB | x kubectl (median) |",
            "|---|---|---|---|---|---|---|",
            summary_row("kubectl get nodes -o json", samples["kubectl"]),
            summary_row("gpu_node_info (module process)", samples["module"], kubectl_median),
            summary_row("gpu_node_info, include_allocations", samples["module+pods"], kubectl_median),
            summary_row("ansible localhost -m gpu_node_info (end to end)", samples["ansible"], kubectl_median),
            "",
            "Result: module median %.2fs = **%.2fx** kubectl's %.2fs: goal (<= %.1fx) %s." % (
                module_median, ratio, kubectl_median, GOAL_RATIO, "met" if ratio <= GOAL_RATIO else "NOT met"),
            "",
            "## Setup",
            "",
            "- Cluster: the sandbox (real kube-apiserver %s, kwok nodes), %d nodes in total: %d added for the run "
            "(name prefix `bench-gpu-%s-`, taint `llmops.bench/only=true:NoSchedule`, label `%s`), cycling through "
            "the %d node kinds of `tests/sandbox/nodes.yaml`; %d of the added nodes have GPUs. Deleted afterwards." % (
                (version.get("serverVersion") or {}).get("gitVersion", "?"), total_nodes, opts.nodes, run_id,
                RUN_LABEL, len(node_templates()), gpu_bench_nodes),
            "- `kubectl get nodes -o json` output: %.1f MiB (%.1f KiB per node); both tools list in pages of 500." % (
                json_bytes / 2.0 ** 20, json_bytes / 1024.0 / max(1, total_nodes)),
            "- Module process: the AnsiballZ payload Ansible generated for the call (ANSIBLE_KEEP_REMOTE_FILES), "
            "run with the venv Python, exactly what runs on the target host; it unpacks, imports kubernetes.core "
            "and the kubernetes client, creates the client (discovery requests included), lists, classifies and "
            "prints its JSON result (%.1f MiB here) to a pipe." % (len(module_out) / 2.0 ** 20),
            "- Rounds alternate the order of the commands; a warm-up call of each is not counted.",
            "- Peak RSS: `ru_maxrss` of that process from wait4(); for the end-to-end row it is the largest "
            "process of the ansible tree (controller or module).",
            "- Machine: %s; %s, Python %s." % (machine(), platform.platform(), platform.python_version()),
            "- Date: %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "",
        ]
        with open(opts.output, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
        write_results(os.path.dirname(os.path.abspath(opts.output)), result_rows(samples, total_nodes),
                      name="gpu_node_info")
        print("\n".join(lines))
        return 0
    finally:
        if not opts.keep:
            delete_nodes(senv, "%s=%s" % (RUN_LABEL, run_id))
        subprocess.run(["rm", "-rf", workdir], check=False)


if __name__ == "__main__":
    sys.exit(main())
