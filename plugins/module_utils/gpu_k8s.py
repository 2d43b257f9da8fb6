# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE)

"""Kubernetes I/O for GPU discovery: one paginated LIST of nodes, one of pods.

The connection comes from kubernetes.core (``get_api_client``); this file only pages through the
two lists. Items are read as raw JSON (no model objects) and pruned or folded page by page, so
memory stays proportional to one page plus the small per-node records.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.llmops.serving.plugins.module_utils.gpu_node import (
    add_pod_allocations,
    prune_node,
)

try:
    from kubernetes.client import CoreV1Api
    from kubernetes.client.rest import ApiException

    HAS_KUBERNETES = True
except ImportError:
    HAS_KUBERNETES = False

    class ApiException(Exception):  # noqa: N818 -- stand-in keeps the except clauses importable
        status = None
        reason = None

try:
    from urllib3.exceptions import HTTPError as TransportError
except ImportError:
    class TransportError(Exception):  # noqa: N818 - mirrors urllib3's name so the except clauses read the same without it
        pass

# Pods that hold no GPU any more are skipped by the API server, not by us.
ACTIVE_POD_FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"


class GpuDiscoveryApiError(Exception):
    """A Kubernetes API failure, with a message that says what to check."""


def unreachable_message(exc, host=None):
    return ("cannot reach the Kubernetes API%s: %s. Check the kubeconfig (kubeconfig/context options or "
            "K8S_AUTH_KUBECONFIG) and that the API server is up" % (" at %s" % host if host else "", exc))


def _explain(exc, what):
    status = getattr(exc, "status", None)
    if status in (401,):
        return "Kubernetes API refused the credentials while listing %s (401): check kubeconfig/api_key" % what
    if status in (403,):
        return ("Kubernetes API forbids listing %s (403): the identity needs 'list' on %s cluster-wide "
                "(a ClusterRole with resources: [%s], verbs: [list])" % (what, what, what))
    return "Kubernetes API error while listing %s: %s %s" % (what, status, getattr(exc, "reason", exc))


def _pages(list_call, what, page_size, **kwargs):
    """Yield the items of each page of one paginated LIST (limit/continue).

    A continue token can expire (410 Gone) on a very slow read; the list then restarts once from
    the beginning, as kubectl does.
    """
    restarted = False
    token = None
    while True:
        try:
            args = dict(kwargs, limit=page_size, _preload_content=False)
            if token:
                args["_continue"] = token
            response = list_call(**args)
            body = json.loads(response.data)
        except ApiException as exc:
            if getattr(exc, "status", None) == 410 and token and not restarted:
                restarted, token = True, None
                yield None
                continue
            raise GpuDiscoveryApiError(_explain(exc, what)) from None
        except TransportError as exc:
            raise GpuDiscoveryApiError(unreachable_message(exc)) from None
        yield body.get("items") or []
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return


def list_nodes(api_client, page_size=500):
    """All nodes, pruned to what discovery reads. Returns (nodes, pages)."""
    core = CoreV1Api(api_client)
    nodes = []
    pages = 0
    for items in _pages(core.list_node, "nodes", page_size):
        if items is None:  # restarted after 410
            nodes, pages = [], 0
            continue
        pages += 1
        nodes.extend(prune_node(item) for item in items)
    return nodes, pages


def list_gpu_allocations(api_client, page_size=500):
    """{node: {gpu resource: requested}} over running pods. Returns (allocations, pages)."""
    core = CoreV1Api(api_client)
    allocations = {}
    pages = 0
    for items in _pages(core.list_pod_for_all_namespaces, "pods", page_size,
                        field_selector=ACTIVE_POD_FIELD_SELECTOR):
        if items is None:
            allocations, pages = {}, 0
            continue
        pages += 1
        add_pod_allocations(allocations, items)
    return allocations, pages
