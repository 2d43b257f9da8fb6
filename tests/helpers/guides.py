"""The guides' own commands (docs/*.md), read from the pages, and a runner that runs them as a user would.

A guide marks each ```bash block with an HTML comment on the line above it (invisible when rendered):

    <!-- test: run -->                       the block is step `run`: tests/guides runs it as written
    <!-- test: skip -- needs a real AWS account -->     not run here; the reason is required

Every bash block of a guide needs one of the two, so a new block cannot stay untested by accident
(tests/unit/test_guide_steps.py checks all of docs/). A step runs as one `bash -e` script, in a copy
of the checkout (the guide's relative paths hold and the vault files it creates stay out of the real
inventories), with the environment the guide tells the user to set. When a command of a step fails,
the failure names the guide, the step and the command.
"""

import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(REPO_ROOT, "docs")
MARKER = re.compile(r"^<!--\s*test:\s*(?P<what>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```\s*(?P<lang>[A-Za-z0-9_+-]*)\s*$")
STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SKIP = re.compile(r"^skip\s*--\s*(?P<reason>\S.*)$")
SHELL_LANGS = ("bash", "sh", "shell", "console")
FAILED_COMMAND = "guide-command-failed: "
# Paths of a checkout that are not part of it (built or generated), left out of the copy.
NOT_COPIED = (".git", ".venv", ".collections", ".sandbox", ".sandbox-test", ".sandbox-guides", "build",
              ".ansible", ".pytest_cache", ".ruff_cache", "__pycache__", "output", "results")


class GuideError(ValueError):
    """A guide's markers are wrong (missing, unnamed, duplicated, or not above a bash block)."""


@dataclass(frozen=True)
class Step:
    guide: str      # path relative to the checkout, e.g. docs/k3s-single-node.md
    name: str       # the marker's step name ("" for a skipped block)
    line: int       # line of the opening fence (1-based)
    text: str       # the block's content, exactly as on the page
    skip: str = ""  # why the block is not run here ("" when it is)

    def label(self):
        return "%s step '%s' (line %d)" % (self.guide, self.name or "skip", self.line)


def parse_steps(markdown, guide="<guide>"):
    """All shell blocks of a page as Steps; GuideError (naming the line) for a block without a marker,
    a marker without a block under it, a bad or repeated step name, or a skip without a reason."""
    lines = markdown.splitlines()
    found, names = [], set()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        marker = MARKER.match(lines[i].strip())
        if marker:
            nxt = i + 1
            while nxt < len(lines) and not lines[nxt].strip():
                nxt += 1
            below = FENCE.match(lines[nxt]) if nxt < len(lines) else None
            if not below or below.group("lang") not in SHELL_LANGS:
                raise GuideError("%s:%d: the marker %r is not above a ```bash block" % (guide, i + 1, lines[i].strip()))
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            raise GuideError("%s:%d: the code block is not closed" % (guide, i + 1))
        if fence.group("lang") in SHELL_LANGS:
            found.append(_step(lines, i, end, guide, names))
        i = end + 1
    return found


def _step(lines, start, end, guide, names):
    above = start - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    marker = MARKER.match(lines[above].strip()) if above >= 0 else None
    if not marker:
        raise GuideError("%s:%d: a ```%s block without a marker: put <!-- test: STEP-NAME --> (run by tests/guides) "
                         "or <!-- test: skip -- REASON --> on the line above it"
                         % (guide, start + 1, FENCE.match(lines[start]).group("lang")))
    what = marker.group("what")
    text = "\n".join(lines[start + 1:end]) + "\n"
    if what.startswith("skip"):
        skip = SKIP.match(what)
        if not skip:
            raise GuideError("%s:%d: a skipped block needs its reason: <!-- test: skip -- REASON -->"
                             % (guide, above + 1))
        return Step(guide, "", start + 1, text, skip.group("reason"))
    if not STEP_NAME.match(what):
        raise GuideError("%s:%d: step name %r: use lower-case letters, digits and dashes" % (guide, above + 1, what))
    if what in names:
        raise GuideError("%s:%d: step name %r is used twice in the page" % (guide, above + 1, what))
    names.add(what)
    return Step(guide, what, start + 1, text)


def guide_steps(guide):
    """{step name: Step} of the runnable steps of docs/<guide> (a path relative to the checkout)."""
    with open(os.path.join(REPO_ROOT, guide), encoding="utf-8") as handle:
        steps = parse_steps(handle.read(), guide)
    return {step.name: step for step in steps if not step.skip}


# ----------------------------------------------------------------------------- the user's checkout

def copy_checkout(dest):
    """A copy of the checkout at ``dest`` (sources, docs, inventories; nothing built or generated), with
    ``.venv`` pointing at the Python environment running the tests: what a user has after `make deps`."""
    if os.path.exists(dest):
        shutil.rmtree(dest)

    def ignore(_directory, names):
        return [name for name in names if name in NOT_COPIED or name.endswith(".pyc")]

    shutil.copytree(REPO_ROOT, dest, ignore=ignore, symlinks=True)
    os.symlink(sys.prefix, os.path.join(dest, ".venv"))
    return dest


def write_tool(directory, name, script):
    """An executable shell script ``directory/name`` (for the sudo and editor the guides call)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/bash\n" + script)
    os.chmod(path, 0o755)  # noqa: S103 - a tool the guide's shell runs
    return path


# The sandbox needs no root (its kubeconfig belongs to the test user), so `sudo` runs the command as
# the same user, but keeps sudo's handling of the environment: without -E it is reset (env_reset),
# so a guide that forgets -E loses KUBECONFIG and HF_TOKEN here as it would on the workstation.
SUDO = r'''keep=""
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
  case "$1" in -E|--preserve-env) keep=1 ;; *) echo "sudo stand-in: option $1 is not handled" >&2; exit 2 ;; esac
  shift
done
if [ -n "$keep" ]; then exec "$@"; fi
exec env -i PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME="$HOME" TERM="${TERM:-dumb}" "$@"
'''

# What a user types into the editor `ansible-vault create` opens: GUIDE_EDITOR_TEXT.
EDITOR = 'printf "%s\\n" "$GUIDE_EDITOR_TEXT" > "$1"\n'


def user_env(tools_dir, extra):
    """The environment of a user's shell: no ANSIBLE_*/K8S_AUTH_* settings of the test run, the
    venv's tools on PATH after the guide's stand-ins, and what the guide says to export (``extra``)."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env["PATH"] = os.pathsep.join([tools_dir, os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env


@dataclass
class StepRun:
    step: Step
    rc: int
    output: str
    failed_command: str

    def failure(self):
        """The message a failed step fails its test with: guide, step, command, the end of the output."""
        return "%s failed (rc=%d) at command: %s\n--- end of its output ---\n%s" % (
            self.step.label(), self.rc, self.failed_command or "(none reported)", self.output[-6000:])


def run_step(step, *, cwd, env, answers=(), timeout=1800):
    """Run a step's block as written (`bash -e`), in ``cwd`` with ``env``, its output on a terminal.

    The output goes to a pseudo-terminal, as in a user's shell (`ansible-vault create` opens an editor
    only on one). ``answers``: (regex, text) pairs; when the output ends with a prompt matching regex (a
    vault password prompt), text is typed in. The step runs in its own session without a controlling
    terminal, so a prompt reads what is typed here, never the terminal of whoever runs the tests.
    """
    script = "set -eE -o pipefail\ntrap 'echo \"%s$BASH_COMMAND\" >&2' ERR\n%s" % (FAILED_COMMAND, step.text)
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # keep "\n" line ends
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=dict(env, TERM="dumb"), stdin=subprocess.PIPE,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    answered_at = 0
    deadline = time.time() + timeout
    while True:
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            out += b"\n[%s: killed after %ds]\n" % (step.label().encode(), timeout)
            break
        ready = select.select([master], [], [], 1.0)[0]
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal has gone
            chunk = b""
        if not chunk:
            break
        out += chunk
        pending = out[answered_at:].decode("utf-8", "replace")
        for regex, text in answers:
            if re.search(regex + r"\s*$", pending):
                proc.stdin.write(text.encode() + b"\n")
                proc.stdin.flush()
                answered_at = len(out)
                break
    os.close(master)
    proc.stdin.close()
    rc = proc.wait()
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    failed = [line[len(FAILED_COMMAND):] for line in text.splitlines() if line.startswith(FAILED_COMMAND)]
    return StepRun(step, rc, text, failed[0] if failed else "")


RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.MULTILINE)


def recaps(output):
    """[(host, {ok, changed, unreachable, failed})] of every PLAY RECAP in a step's output, in order."""
    return [(m.group("host"), {k: int(m.group(k)) for k in ("ok", "changed", "unreachable", "failed")})
            for m in RECAP.finditer(output)]


def changed_tasks(output):
    """Names of the tasks that printed `changed:` in a default-callback log (for failure messages)."""
    names, task = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK ["):line.rfind("]")]
        elif line.startswith("changed:") and task and task not in names:
            names.append(task)
    return names
