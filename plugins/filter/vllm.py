# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the vllm role; the logic lives in module_utils/vllm.py.

Documentation of each filter is in the sidecar files vllm_plan.yml, vllm_prune_targets.yml,
vllm_cli_args.yml, vllm_startup_probe.yml and vllm_pod_problems.yml next to this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.serving.plugins.module_utils import vllm as vllm_utils
from ansible_collections.llmops.serving.plugins.module_utils import vllm_inputs, vllm_pod


def vllm_plan(models, settings=None, cluster=None, prune=False):
    """Resolve the model list; never raises for user mistakes, it returns them in ``errors``."""
    return vllm_utils.plan(models, settings or {}, cluster=cluster, prune=bool(prune))


def vllm_prune_targets(existing, desired, models, prune=False, purge=False):
    """This role's objects that are no longer wanted (see module_utils.vllm.prune_targets)."""
    return vllm_utils.prune_targets(existing, desired, models, prune=bool(prune), purge=bool(purge))


def vllm_cli_args(model, settings=None):
    """The ``vllm serve`` arguments the role would render for one model."""
    result = vllm_utils.plan([model], settings or {})
    if result["errors"]:
        raise AnsibleFilterError("vllm_cli_args: " + "; ".join(result["errors"]))
    return result["models"][0]["args"]


def vllm_startup_probe(model_bytes, settings=None, downloads_at_start=False):
    """Startup probe sized from a model's bytes (int or Kubernetes quantity; 0/None = unknown)."""
    try:
        size = vllm_inputs.parse_bytes(model_bytes, "model_bytes") if model_bytes else None
    except vllm_inputs.VllmInputError as exc:
        raise AnsibleFilterError("vllm_startup_probe: %s" % exc) from exc
    return vllm_pod.startup_probe(size, settings or {}, bool(downloads_at_start))


def vllm_pod_problems(pods):
    """Why the pods of a model are not ready, one line per pod."""
    return vllm_utils.pod_problems(pods)


class FilterModule(object):
    def filters(self):
        return {
            "vllm_plan": vllm_plan,
            "vllm_prune_targets": vllm_prune_targets,
            "vllm_cli_args": vllm_cli_args,
            "vllm_startup_probe": vllm_startup_probe,
            "vllm_pod_problems": vllm_pod_problems,
        }
