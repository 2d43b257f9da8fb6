#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Helm post-renderer of the llmops.serving model_engine role.

Helm pipes the rendered manifests (hooks excluded, in Helm 3) to stdin and installs what this
prints on stdout. Configuration comes from a JSON file named by ``--config PATH`` or the
environment variable LLMOPS_MODEL_ENGINE_POST_RENDER_CONFIG (Helm 3 passes post-renderers no
arguments of its own, so the role calls this through a wrapper script):

    {"served": ["apps/v1/Deployment", ...],      # from live API discovery
     "droppable_groups": ["networking.istio.io", ...],
     "endpoint_namespace": "llm-engine-endpoints", "control_namespace": "llm-engine",
     "replace_cluster_admin": true, "keda_redis_secret": null,
     "report_path": "/path/report.json"}

It drops objects whose API the cluster does not serve (in the droppable groups only), replaces the
chart's cluster-admin binding with least-privilege RBAC, and leaves every other document
byte-for-byte. What it did goes to ``report_path`` as JSON. Errors go to stderr with exit code 1,
which makes Helm stop before anything is installed.

The logic lives in model_engine_values.py (the collection's module_utils), which the role copies
next to this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys

CONFIG_ENV = "LLMOPS_MODEL_ENGINE_POST_RENDER_CONFIG"


def _import_logic():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [here, os.path.join(here, "..", "..", "..", "plugins", "module_utils")]
    for path in candidates:
        if os.path.exists(os.path.join(path, "model_engine_values.py")):
            sys.path.insert(0, os.path.abspath(path))
            break
    import model_engine_values  # noqa: E402  pylint: disable=import-error

    return model_engine_values


def _config_path(argv):
    if len(argv) >= 2 and argv[0] == "--config":
        return argv[1]
    return os.environ.get(CONFIG_ENV)


def main(argv=None, stdin=None, stdout=None, stderr=None):
    argv = sys.argv[1:] if argv is None else argv
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    path = _config_path(argv)
    if not path:
        stderr.write("post_renderer: no configuration: pass --config PATH or set %s\n" % CONFIG_ENV)
        return 2
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (IOError, OSError, ValueError) as exc:
        stderr.write("post_renderer: cannot read configuration %s: %s\n" % (path, exc))
        return 2
    logic = _import_logic()
    stream = stdin.read()
    try:
        rendered, report = logic.post_render(stream, config)
    except (logic.PostRenderError, ValueError) as exc:
        stderr.write("post_renderer: refusing to install:\n%s\n" % exc)
        return 1
    report_path = config.get("report_path")
    if report_path:
        tmp = report_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(report, handle, indent=2, sort_keys=True)
        os.rename(tmp, report_path)
    stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
