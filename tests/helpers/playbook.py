"""Reading ansible-playbook runs made with the json callback (tests.helpers.sandbox.run_playbook() results,
or any dict with ``json``, ``stdout`` and ``stderr``), and where the sandbox inventory and playbooks are."""

import os

from tests.helpers.sandbox import REPO_ROOT, kubectl

INVENTORY = os.path.join(REPO_ROOT, "inventories", "sandbox")
PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")


def host_results(run):
    """[(task key, host result)] in order; a task's key is its name and file:line."""
    out = []
    for play in (run["json"] or {}).get("plays", []):
        for task in play.get("tasks", []):
            key = (task["task"]["name"], task["task"].get("path", ""))
            out.extend((key, host) for host in task["hosts"].values())
    return out


def failures(run):
    """``task: msg`` of every failed host result; the end of the output when there is none (a run that
    failed before any task, or output that is not the json callback's)."""
    found = ["%s: %s" % (key[0], host.get("msg")) for key, host in host_results(run) if host.get("failed")]
    return "\n".join(found) or run["stderr"][-3000:] or run["stdout"][-3000:]


def changed_keys(run):
    """Keys (name, file:line) of the tasks that reported a change on any host."""
    return {key for key, host in host_results(run) if host.get("changed")}


def changed_tasks(run):
    """Sorted names of the tasks that reported a change on any host."""
    return sorted({name for name, _path in changed_keys(run)})


def exists(kind, name, namespace):
    return kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name").stdout.strip() != ""
