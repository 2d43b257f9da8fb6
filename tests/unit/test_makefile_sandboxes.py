"""The demo and the test suite each run in a sandbox of their own (issue: `make demo`, then `make test`).

`make -n` prints the commands a target would run without running them; every command of a test target
that reaches a sandbox must name the tests' directory, every demo command the demo's. A test target
that fell back to the default `.sandbox` would meet the demo's endpoints (its T4 taken), its Helm
release (cluster-scoped PriorityClasses owned by another release) and would purge what the user is
exploring (molecule's destroy).
"""

import os
import re
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_DIR = os.path.join(REPO_ROOT, ".sandbox")
TEST_DIR = os.path.join(REPO_ROOT, ".sandbox-test")
# commands that act on a sandbox: sandbox.py itself, pytest against the sandbox, molecule, Ansible runs
SANDBOX_COMMAND = re.compile(
    r"sandbox\.py|pytest tests/(sandbox|integration|drills)|molecule test|ansible-playbook|run_all\.py")


def dry_run(target):
    # VENV points at a path that exists nowhere so deps-python's recipe is printed, never run
    # a parent make (make test runs this file) must not hand its flags down to the dry run
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "-n", "-C", REPO_ROOT, "VENV=/nonexistent-venv", target],
                          capture_output=True, text=True, check=True, env=env)
    return [line for line in proc.stdout.splitlines() if SANDBOX_COMMAND.search(line)]


def sandbox_dirs(line):
    return set(re.findall(r"LLMOPS_SANDBOX_DIR=(\S+)", line))


@pytest.mark.parametrize("target", ["integration", "drills", "molecule", "bench",
                                    "test-sandbox-up", "test-sandbox-purge"])
def test_test_targets_use_the_tests_sandbox_only(target):
    lines = dry_run(target)
    assert lines, "make -n %s printed no sandbox command" % target
    for line in lines:
        if "sandbox.py build" in line:
            continue  # binaries are cached outside both sandboxes
        assert sandbox_dirs(line) == {TEST_DIR}, "make %s: %s" % (target, line)


@pytest.mark.parametrize("target", ["demo", "sandbox-up", "sandbox-purge", "demo-summary"])
def test_demo_targets_use_the_demo_sandbox_only(target):
    lines = dry_run(target)
    assert lines, "make -n %s printed no sandbox command" % target
    for line in lines:
        if "sandbox.py build" in line:
            continue
        assert sandbox_dirs(line) == {DEMO_DIR}, "make %s: %s" % (target, line)


def test_test_helpers_default_to_the_tests_sandbox(monkeypatch):
    from tests.helpers import sandbox

    monkeypatch.delenv("LLMOPS_SANDBOX_DIR", raising=False)
    assert sandbox.sandbox_dir() == TEST_DIR


def test_molecule_scenario_uses_the_tests_sandbox():
    import yaml

    with open(os.path.join(REPO_ROOT, "molecule", "default", "molecule.yml"), encoding="utf-8") as handle:
        scenario = yaml.safe_load(handle)
    assert scenario["ansible"]["env"]["LLMOPS_SANDBOX_DIR"] == "${MOLECULE_PROJECT_DIRECTORY}/.sandbox-test"
