"""docs/awx.md: the execution environment's build context, and awx_register.yml against the real awx.awx
modules, as far as they run without a controller.

What is real here and what is not:
- Step `build-context` runs as written: `make build-collection` and `ansible-builder create` (no
  container runtime needed) make the build context; the test reads it back. `ansible-builder build`
  and `podman push` need a container runtime and a registry (none here, shared FACTS.md section 5):
  that block is skipped, and the test checks it builds from the same definition and context.
- Step `register` runs as written. There is no AWX controller here (it is a Django service with its
  own Postgres, Redis and receptor; not available to build or run in this sandbox), and a local HTTP
  server answering like one would be a stand-in that proves nothing about AWX. What does run is every
  awx.awx module of the playbook up to its first request: Ansible parses the playbook and the
  guide's extra vars, templates each task's arguments, and the module validates them against its
  real argument spec, then tries the controller named in CONTROLLER_HOST. So each task must fail
  with the connection error, for every loop item, and with nothing else: a misspelled option, a wrong
  type or a bad choice fails differently and fails this test. The first task is reached by the
  step itself; the later ones by the same command with `--start-at-task` (check mode would add
  nothing: awx.awx modules read the controller before they decide). Whether AWX accepts the objects
  is not tested here.
- Without a controller, the test also checks what the page promises about the playbook: every job
  template's playbook exists, the surveys' variables are the playbooks' own, and the credential
  types inject exactly the environment variables inventories/cluster reads secrets from.
"""

import dataclasses
import glob
import os
import re
import shlex
import tarfile

import pytest
import yaml

from tests.guides.shapes import GUIDES_DIR, require_ok
from tests.helpers import guides

GUIDE = "docs/awx.md"
PLAYBOOK = os.path.join(guides.REPO_ROOT, "playbooks", "awx_register.yml")
CONNECTION_ERROR = re.compile(r"network error|Name or service not known|Temporary failure in name resolution|"
                              r"Connection refused|No address associated|urlopen error", re.IGNORECASE)

pytestmark = [pytest.mark.guides]


@pytest.fixture(scope="module")
def user():
    """A copy of the checkout (the build writes build/ and the steps run from its root), no sandbox."""
    base = os.path.join(GUIDES_DIR, "awx")
    checkout = guides.copy_checkout(os.path.join(base, "checkout"))
    tools = os.path.join(base, "tools")
    os.makedirs(tools, exist_ok=True)
    yield checkout, guides.user_env(tools, {})
    if not os.environ.get("LLMOPS_GUIDES_KEEP"):
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def _flag(step, command, flag):
    """The value of ``flag`` in the first line of ``step`` that runs ``command``."""
    for line in step.text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:len(command)] == command and flag in words:
            return words[words.index(flag) + 1]
    pytest.fail("%s: no `%s ... %s VALUE` command" % (step.label(), " ".join(command), flag))


def test_build_context_step(user):
    checkout, env = user
    step = guides.guide_steps(GUIDE)["build-context"]
    require_ok(guides.run_step(step, cwd=checkout, env=env))
    definition = _flag(step, ["ansible-builder", "create"], "-f")
    context = os.path.join(checkout, _flag(step, ["ansible-builder", "create"], "-c"))
    with open(os.path.join(checkout, definition), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["version"] == 3, "%s: %s is not an EE definition" % (step.label(), definition)

    candidates = (os.path.join(context, "Containerfile"), os.path.join(context, "Dockerfile"))
    containerfile = next(open(path, encoding="utf-8").read() for path in candidates if os.path.exists(path))
    # The pull init container of the vllm role runs this image too: it needs ansible-core (awx.md, section 1).
    assert re.search(r"ansible-core[<>=]", containerfile), "%s: the image installs no ansible-core" % step.label()
    with open(os.path.join(context, "_build", "requirements.txt"), encoding="utf-8") as handle:
        python = handle.read()
    assert "boto3" in python and "kubernetes" in python, python
    tarballs = glob.glob(os.path.join(context, "_build", "collections", "llmops-serving-*.tar.gz"))
    assert tarballs, "%s: the collection tarball is not in the build context" % step.label()
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
    assert "roles/vllm/files/vllm_s3_pull.py" in names and "plugins/module_utils/s3.py" in names

    with open(os.path.join(guides.REPO_ROOT, GUIDE), encoding="utf-8") as handle:
        skipped = [s for s in guides.parse_steps(handle.read(), GUIDE) if s.skip and "ansible-builder build" in s.text]
    assert skipped, "docs/awx.md: no `ansible-builder build` block"
    assert _flag(skipped[0], ["ansible-builder", "build"], "-f") == definition, (
        "%s: `ansible-builder build` uses another definition than step build-context" % skipped[0].label())
    assert _flag(skipped[0], ["ansible-builder", "build"], "-c") == _flag(step, ["ansible-builder", "create"], "-c")


class _PlaybookLoader(yaml.SafeLoader):
    """YAML with Ansible's !unsafe tag (a string Ansible never templates)."""


_PlaybookLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _tasks():
    with open(PLAYBOOK, encoding="utf-8") as handle:
        play = yaml.load(handle, Loader=_PlaybookLoader)[0]  # noqa: S506 - a SafeLoader with one more tag
    return play, [task["name"] for task in play["tasks"]]


def _task_failures(output, task):
    """The failure messages printed under TASK [task] in a default-callback log."""
    block = output.split("TASK [%s]" % task, 1)
    assert len(block) == 2, "task %r did not run:\n%s" % (task, output[-3000:])
    body = block[1].split("\nTASK [", 1)[0].split("\nPLAY RECAP", 1)[0]
    # each failure: its `failed:`/`fatal:` line and the indented result lines under it
    return re.findall(r"^(?:failed|fatal): .*(?:\n[ \t]+.*)*", body, re.MULTILINE), body


def test_register_step_reaches_the_controller_from_every_task(user):
    checkout, env = user
    step = guides.guide_steps(GUIDE)["register"]
    play, tasks = _tasks()
    command = "ansible-playbook playbooks/awx_register.yml"
    assert step.text.count(command) == 1, "%s: expected one `%s`" % (step.label(), command)
    for number, task in enumerate(tasks):
        run_this = step if number == 0 else dataclasses.replace(
            step, text=step.text.replace(command, "%s --start-at-task %s" % (command, shlex.quote(task))))
        run = guides.run_step(run_this, cwd=checkout, env=env)
        assert run.rc != 0, "%s: ran without a controller?\n%s" % (step.label(), run.output[-3000:])
        failures, body = _task_failures(run.output, task)
        if task == "Credentials (values from ansible-vault)":  # an empty list by default: no item, no request
            assert "skipping" in body or not failures, body
            continue
        assert failures, "%s: task %r did not fail:\n%s" % (step.label(), task, body)
        wrong = [line for line in failures if not CONNECTION_ERROR.search(line)]
        assert not wrong, "%s: task %r failed before reaching the controller (argument error?):\n%s" % (
            step.label(), task, "\n".join(wrong))
        loop = play["tasks"][number].get("loop")
        if loop == "{{ awx_register_credential_types }}":
            assert len(failures) == len(play["vars"]["awx_register_credential_types"]), body


def test_register_playbook_matches_the_page_and_the_inventory():
    play = _tasks()[0]
    templates = play["vars"]["awx_register_templates"]
    for template in templates:
        assert os.path.exists(os.path.join(guides.REPO_ROOT, "playbooks", template["playbook"])), template
    for name, survey in play["vars"]["awx_register_surveys"].items():
        playbook = next(t["playbook"] for t in templates if t.get("survey") == name)
        with open(os.path.join(guides.REPO_ROOT, "playbooks", playbook), encoding="utf-8") as handle:
            source = handle.read()
        for question in survey["spec"]:
            assert re.search(r"\b%s\b" % question["variable"], source), (playbook, question["variable"])

    secrets_yml = os.path.join(guides.REPO_ROOT, "inventories", "cluster", "group_vars", "all", "secrets.yml")
    with open(secrets_yml, encoding="utf-8") as handle:
        read = set(re.findall(r"lookup\('ansible.builtin.env', '(\w+)'\)", handle.read()))
    injected = {name for ctype in play["vars"]["awx_register_credential_types"] for name in ctype["injectors"]["env"]}
    assert read and read <= injected, "secrets.yml reads %s, no credential type injects them" % sorted(read - injected)
    with open(os.path.join(guides.REPO_ROOT, GUIDE), encoding="utf-8") as handle:
        page = handle.read()
    for name in injected:
        assert "`%s`" % name in page, "docs/awx.md does not name %s in its credential types table" % name
