# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the model_engine role; the logic lives in module_utils/model_engine_values.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.llmops.serving.plugins.module_utils import model_engine_values as logic


def _plain(data):
    """Plain dicts and lists from Ansible's lazily templated containers.

    The logic deep-copies its inputs, and copy.deepcopy of ansible-core 2.19's lazy containers
    re-wraps every level: a 20 ms call took 25-120 s in site.yml before this conversion."""
    if isinstance(data, Mapping):
        return dict((key, _plain(value)) for key, value in data.items())
    if isinstance(data, (list, tuple)):
        return [_plain(item) for item in data]
    if isinstance(data, str):
        return str(data)  # Ansible's unsafe/lazy str subclasses: yaml.safe_dump refuses them
    return data


def _values(inputs, extra_values=None, extra_known=None, render_record=None):
    try:
        return logic.chart_values(_plain(inputs), _plain(extra_values or {}), list(extra_known or ()),
                                  _plain(render_record))
    except logic.ModelEngineInputError as exc:
        errors = "\n- ".join(to_native(e) for e in exc.errors)
        raise AnsibleFilterError("model_engine: bad input:\n- " + errors) from None


def _served_apis(apis):
    return logic.served_api_kinds(apis)


def _unknown_keys(values, extra_known=None):
    return logic.unknown_keys(_plain(values), list(extra_known or ()))


def _deep_merge(base, override):
    return logic.deep_merge(_plain(base), _plain(override))


def _hook_problems(hooks, served, droppable_groups=None):
    manifests = []
    for hook in hooks or []:
        manifests.append(hook.get("manifest", "") if isinstance(hook, dict) else to_native(hook))
    return logic.hook_problems(manifests, served, droppable_groups)


def _manifest_diff(current, planned):
    return logic.manifest_diff(current or "", planned or "")


def _rollout_pending(deployments, expected_names=None):
    return logic.rollout_pending(deployments, expected_names or logic.CONTROL_PLANE_DEPLOYMENTS)


def _secret_refs(values, namespace, endpoint_namespace, keda_served=False):
    return logic.secret_references(_plain(values), namespace, endpoint_namespace, bool(keda_served))


def _keda_auth(values, keda_served=False):
    return logic.keda_redis_auth(_plain(values), bool(keda_served))


def _missing_secrets(lookups):
    """``lookups``: results of a k8s_info loop over the references (item = reference)."""
    references, found = [], {}
    for result in lookups or []:
        ref = result["item"]
        references.append(ref)
        resources = result.get("resources") or []
        key = "%s/%s" % (ref["namespace"], ref["name"])
        found[key] = sorted(resources[0].get("data") or {}) if resources else None
    return logic.missing_secrets(references, found)


def _service_config(values, namespace, redis_password=None):
    try:
        return logic.service_config_document(_plain(values), _plain(namespace), _plain(redis_password) or None)
    except logic.ModelEngineInputError as exc:
        raise AnsibleFilterError("model_engine: " + "; ".join(to_native(e) for e in exc.errors)) from None


def _redis_notes(redis):
    return logic.redis_upstream_notes(_plain(redis))


def _cluster_conflicts(priority_classes, release, namespace, reuse=False):
    return logic.cluster_scoped_conflicts(_plain(priority_classes), _plain(release), _plain(namespace), bool(reuse))


class FilterModule(object):
    """llmops.serving model_engine filters."""

    def filters(self):
        return {
            "model_engine_values": _values,
            "model_engine_served_apis": _served_apis,
            "model_engine_unknown_keys": _unknown_keys,
            "model_engine_deep_merge": _deep_merge,
            "model_engine_hook_problems": _hook_problems,
            "model_engine_manifest_diff": _manifest_diff,
            "model_engine_rollout_pending": _rollout_pending,
            "model_engine_secret_refs": _secret_refs,
            "model_engine_missing_secrets": _missing_secrets,
            "model_engine_keda_auth": _keda_auth,
            "model_engine_service_config": _service_config,
            "model_engine_redis_notes": _redis_notes,
            "model_engine_cluster_conflicts": _cluster_conflicts,
        }
