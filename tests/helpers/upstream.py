"""Where the pinned LLM Engine checkout is (github.com/scaleapi/llm-engine at the commit in
tests/scripts/upstream-llm-engine.sh): its chart ``charts/model-engine`` and its server ``model-engine/``.

One rule, the script's: ``$LLMOPS_UPSTREAM_LLM_ENGINE``; else ``../shared/upstream/llm-engine`` next to
the checkout when it exists; else the clone ``make upstream`` leaves in the sandbox cache. Tests that
need it fail (not skip) with that rule in the message when it is missing.
"""

import os
import subprocess

from tests.helpers.sandbox import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "tests", "scripts", "upstream-llm-engine.sh")


def upstream_dir():
    return subprocess.run(["bash", SCRIPT, "path"], capture_output=True, text=True, check=True).stdout.strip()


def chart_dir():
    """``charts/model-engine`` of the pinned checkout; RuntimeError with the fix when it is missing."""
    path = os.path.join(upstream_dir(), "charts", "model-engine")
    if not os.path.isfile(os.path.join(path, "Chart.yaml")):
        raise RuntimeError("the pinned LLM Engine chart is not at %s: run `make upstream`, or set "
                           "LLMOPS_UPSTREAM_LLM_ENGINE to a checkout of github.com/scaleapi/llm-engine at the "
                           "pinned commit (tests/scripts/upstream-llm-engine.sh)" % path)
    return path
