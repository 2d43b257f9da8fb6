#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE) or GNU General Public License v3.0+
# (see https://www.gnu.org/licenses/gpl-3.0.txt), at your option.
# SPDX-License-Identifier: Apache-2.0 OR GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gpu_node_info
short_description: Discover GPU nodes, GPU types, exact node selectors and LLM Engine hardware
version_added: 0.1.0
author:
  - llmops.serving contributors (@llmops)
description:
  - Reads every node of the cluster with one paginated LIST (and, with O(include_allocations=true),
    the running pods with one paginated LIST that skips Succeeded and Failed pods), then classifies
    each GPU node whatever labeling scheme it uses - NVIDIA GPU Feature Discovery or GPU Operator
    (full or family-only labels, MIG single and mixed, time-slicing and MPS), device plugin only
    (typical k3s), EKS C(k8s.amazonaws.com/accelerator), Karpenter, GKE, AKS, AMD, Intel, Gaudi and
    custom labels given through O(label_aliases).
  - Returns per node the vendor, GPU resources, counts, product, memory, sharing mode, labeling
    scheme, canonical C(gpu_type), taints, readiness and allocatable CPU, memory and ephemeral
    storage; per GPU type the node selector that matches exactly that type's nodes and no other
    node; and C(recommendedHardware) entries for the LLM Engine Helm chart.
  - C(gpu_type) names the real product, with LLM Engine's names where the product is the one LLM
    Engine means by them (C(nvidia-tesla-t4), C(nvidia-ampere-a10) for A10 and A10G,
    C(nvidia-ampere-a100) for A100 40GB, C(nvidia-hopper-h100) for H100 SXM,
    C(nvidia-hopper-h100-1g20gb), C(nvidia-hopper-h100-3g40gb)) and
    C(<vendor>-<family>-<model>) names for the rest (C(nvidia-ampere-a100-80gb),
    C(nvidia-hopper-h100-pcie), C(nvidia-hopper-h100-nvl), C(nvidia-ada-l4), C(nvidia-ada-l40),
    C(nvidia-ada-l40s), C(nvidia-hopper-h200), C(nvidia-blackwell-b200), C(amd-instinct-mi300x) ...).
    MIG slices append the profile (C(-1g20gb)), time-sliced or MPS GPUs append C(-shared).
  - C(llm_engine_gpu_type) is the value of LLM Engine's closed C(GpuType) enum (C(nvidia-tesla-t4),
    C(nvidia-ampere-a10), C(nvidia-ampere-a100), C(nvidia-ampere-a100e), C(nvidia-hopper-h100),
    C(nvidia-hopper-h100-1g20gb), C(nvidia-hopper-h100-3g40gb); its server rejects any other value)
    that never overstates the GPU - the most capable type whose reference GPU it matches or beats in
    memory, compute capability, memory bandwidth and FP16 Tensor throughput (an H200 is an
    C(nvidia-hopper-h100), an L40S an C(nvidia-ampere-a10), an H100 PCIe an C(nvidia-ampere-a100)).
    A MIG slice gets an H100 MIG type only when its GPU is at least an H100 SXM and the slice has at
    least that type's compute slices and memory. C(nvidia-ampere-a100e) is never chosen (LLM Engine
    refuses it when an endpoint is created). Where nothing fits (an L4 has less memory bandwidth
    than a T4, a V100 a lower compute capability, shared GPUs no memory isolation) it is null and
    C(llm_engine_reason) in RV(gpu_types) says why and which O(llm_engine_gpu_types) entry would map it.
  - A GPU node whose labels say nothing about the product (device plugin only) gets
    C(<vendor>-unknown), for example C(nvidia-unknown), and a warning; map it with
    O(gpu_type_overrides) or O(label_aliases).
  - Problems that do not stop discovery (GPU nodes without labels, unknown products, NotReady or
    cordoned GPU nodes, mixed driver versions, label conflicts) are returned in RV(discovery_warnings)
    and shown as warnings; they never fail the task.
  - The module never writes to the cluster. With O(plan_labels=true) it returns in
    RV(label_changes) the patches that set O(accelerator_label) to the node's
    C(llm_engine_gpu_type) and C(llmops.serving/gpu-product) to its C(gpu_type) on each GPU node (the
    M(llmops.serving.gpu_discovery) role applies them).
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  accelerator_label:
    description:
      - Node label that LLM Engine endpoint pods select on (the chart hard-codes
        C(k8s.amazonaws.com/accelerator)).
      - An existing value of this label that this collection did not set is read as the node's
        C(gpu_type); values this collection set (listed in the node annotation
        C(llmops.serving/managed-labels)) are never used as evidence.
    type: str
    default: k8s.amazonaws.com/accelerator
  gpu_type_overrides:
    description:
      - Map of node name or GPU product (as in C(nvidia.com/gpu.product), for example
        C(NVIDIA-RTX-6000-Ada-Generation)) to the C(gpu_type) to use.
      - A node name wins over a product; both win over every label. Values must be valid label
        values because they become the label
        C(llmops.serving/gpu-product).
    type: dict
    default: {}
  label_aliases:
    description:
      - Map of a custom node label to what its value means, for clusters labeled by hand.
      - Meanings are V(gpu_type) (the value is already a gpu_type), V(product) (a product name
        such as C(A100-80GB), matched against the product table), V(family), V(memory) (per-GPU
        memory, MiB or with a unit such as C(80G)) and V(count).
      - Aliased labels take precedence over the built-in label schemes.
    type: dict
    default: {}
  llm_engine_gpu_types:
    description:
      - Map of node name, GPU product (as in C(nvidia.com/gpu.product)) or C(gpu_type) to the LLM
        Engine gpu_type its nodes' accelerator label should carry, for GPUs no LLM Engine type fits on
        its own (for example C(NVIDIA-L4) mapped to C(nvidia-tesla-t4)) or to choose a smaller type.
      - Values must be one of LLM Engine's C(GpuType) values other than C(nvidia-ampere-a100e),
        which LLM Engine refuses when an endpoint is created.
      - A node name wins over a product, a product over a C(gpu_type).
    type: dict
    default: {}
  plan_labels:
    description:
      - Compute RV(label_changes) and build node selectors as if those accelerator labels were
        already applied.
    type: bool
    default: false
  include_allocations:
    description:
      - Also list running pods (one paginated LIST) to report allocated and free GPUs.
      - Without it, allocated and free values are C(null).
    type: bool
    default: false
  page_size:
    description:
      - Items per page of each LIST call (the C(limit) parameter).
    type: int
    default: 500
requirements:
  - kubernetes >= 24.2.0
  - PyYAML >= 3.11
notes:
  - Needs C(list) on C(nodes) (and on C(pods) with O(include_allocations=true)) cluster-wide.
  - Supports check mode; the module only reads.
seealso:
  - module: kubernetes.core.k8s_info
"""

EXAMPLES = r"""
- name: Discover GPU nodes
  llmops.serving.gpu_node_info:
    include_allocations: true
  register: gpu

- name: Show the GPU types and their node selectors
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.gpus_free }}/{{ item.value.gpus_total }} free, {{ item.value.node_selector }}"
  loop: "{{ gpu.gpu_types | dict2items }}"

- name: Map a node with the device plugin only (no GPU labels) and a custom label
  llmops.serving.gpu_node_info:
    kubeconfig: /etc/rancher/k3s/k3s.yaml
    gpu_type_overrides:
      workstation-1: nvidia-ada-l40
      NVIDIA-RTX-6000-Ada-Generation: nvidia-ada-rtx-6000
    llm_engine_gpu_types:
      NVIDIA-L4: nvidia-tesla-t4  # no LLM Engine type fits an L4 on its own (less bandwidth than a T4)
    label_aliases:
      example.com/gpu-model: product
      example.com/gpu-mem: memory
    plan_labels: true
  register: gpu
"""

RETURN = r"""
nodes:
  description: One record per GPU node (nodes with a GPU resource or GPU labels), sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name.
      type: str
    vendor:
      description: V(nvidia), V(amd), V(intel) or V(habana).
      type: str
    gpu_type:
      description: The real product as this collection names it (written to the label
        C(llmops.serving/gpu-product)); for MIG mixed nodes the profile with most slices.
      type: str
      sample: nvidia-hopper-h200
    llm_engine_gpu_type:
      description: The LLM Engine gpu_type for the accelerator label, or null when none fits (or
        the node has several GPU types).
      type: str
      sample: nvidia-hopper-h100
    llm_engine_reason:
      description: Why RV(nodes[].llm_engine_gpu_type) is null, with the O(llm_engine_gpu_types)
        entry that would map it.
      type: str
    gpu_types:
      description: Every GPU type on the node (several only with MIG mixed).
      type: list
      elements: str
    gpus:
      description: Per GPU type of the node, its resource name, capacity, allocatable, allocated, free,
        memory_mib, nominal_gb, MIG profile and product.
      type: list
      elements: dict
    product:
      description: Product as labeled (or as derived from the instance type).
      type: str
      sample: NVIDIA-H100-80GB-HBM3
    product_label:
      description: Label the product was read from.
      type: str
    family:
      description: GPU family (architecture).
      type: str
    memory_mib:
      description: Memory per GPU (or per MIG slice) in MiB; labels are treated as minimums.
      type: int
    memory_source:
      description: V(label), V(mig-profile), V(product-table) or V(unknown).
      type: str
    count:
      description: Physical GPUs on the node.
      type: int
    resource_name:
      description: Extended resource pods request for the node's main GPU type.
      type: str
      sample: nvidia.com/gpu
    resources:
      description: Every GPU resource of the node with capacity, allocatable, allocated and free.
      type: dict
    gpus_capacity:
      description: Capacity of RV(nodes[].resource_name).
      type: int
    gpus_allocatable:
      description: Allocatable of RV(nodes[].resource_name).
      type: int
    gpus_allocated:
      description: Requested by running pods (null unless O(include_allocations=true)).
      type: int
    gpus_free:
      description: Allocatable minus allocated (null unless O(include_allocations=true)).
      type: int
    sharing:
      description: C(mode) (none, time-slicing, mps, mig-single, mig-mixed), C(replicas) and
        C(mig_profiles).
      type: dict
    labeling_scheme:
      description: Where the type came from (override, custom-alias, accelerator-label, eks,
        gpu-feature-discovery, family-only, gke, karpenter, amd-gpu-labeller, intel-nfd,
        instance-type, device-plugin-only).
      type: str
    taints:
      description: Node taints, each with C(blocks_gpu_pods) (not tolerated by LLM Engine's GPU toleration).
      type: list
      elements: dict
    blocks_gpu_pods:
      description: Whether some taint keeps LLM Engine endpoint pods off the node.
      type: bool
    tolerations_needed:
      description: Tolerations a pod needs to land on the node.
      type: list
      elements: dict
    ready:
      description: Node condition Ready is True.
      type: bool
    cordoned:
      description: C(spec.unschedulable) is set.
      type: bool
    schedulable:
      description: Ready and not cordoned.
      type: bool
    cpu_allocatable_millicores:
      description: Allocatable CPU in millicores.
      type: int
    memory_allocatable_bytes:
      description: Allocatable memory in bytes.
      type: int
    ephemeral_storage_allocatable_bytes:
      description: Allocatable ephemeral storage in bytes.
      type: int
    kubelet_version:
      description: Kubelet version.
      type: str
    is_k3s:
      description: The kubelet is k3s.
      type: bool
    runtime_class:
      description: RuntimeClass GPU pods need there (V(nvidia) on k3s), else null.
      type: str
    driver_version:
      description: NVIDIA driver version from GFD labels.
      type: str
    accelerator_label_value:
      description: Current value of O(accelerator_label).
      type: str
    accelerator_label_managed:
      description: Whether this collection set that label.
      type: bool
    accelerator_label_desired:
      description: Value the node's accelerator label should carry (its C(llm_engine_gpu_type);
        null when none fits or for MIG mixed nodes with several types).
      type: str
gpu_types:
  description: Aggregate per GPU type (C(gpu_type), the real product); C(llm_engine_gpu_type) is
    the LLM Engine type its nodes' accelerator label carries, C(llm_engine_compatible) and
    C(llm_engine_reason) say whether LLM Engine endpoint pods can use it and why not.
  returned: always
  type: dict
  sample:
    nvidia-tesla-t4:
      nodes: [gpu-1]
      gpus_total: 1
      gpus_schedulable: 1
      gpus_free: 1
      gpus_per_node_max: 1
      gpu_memory_mib: 15360
      gpu_memory_gb: 16
      resource_name: nvidia.com/gpu
      node_selector: {nvidia.com/gpu.product: Tesla-T4}
      node_selector_exact: true
      node_selector_source: product
      tolerations: []
      vendor: nvidia
      products: [Tesla-T4]
      family: turing
      sharing: none
      ephemeral_storage_bytes_min: 123480309760
      runtime_class: null
      llm_engine_gpu_type: nvidia-tesla-t4
      labeled_nodes: [gpu-1]
      llm_engine_compatible: true
      llm_engine_reason: null
recommended_hardware:
  description: C(recommendedHardware) values for the LLM Engine chart, derived from real node
    capacity. Rows name LLM Engine gpu_types only; nodes are pooled per LLM Engine type, with the
    smallest real GPU memory of the pool, and cpus, memory and storage are capped at LLM Engine's
    per-worker limits for that type (less what its forwarder sidecar takes).
  returned: always
  type: dict
  contains:
    byGpuMemoryGb:
      description: Entries C(gpu_memory_le, cpus, gpus, memory, storage, gpu_type, nodes_per_worker)
        sorted by C(gpu_memory_le); storage never exceeds 90% of the smallest node's ephemeral storage.
        C(gpu_type) is an LLM Engine gpu_type.
      type: list
      elements: dict
    byModelName:
      description: Always empty.
      type: list
      elements: dict
label_changes:
  description: Label patches to apply (only with O(plan_labels=true)) - the accelerator label and
    C(llmops.serving/gpu-product).
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: Node name.
      type: str
    action:
      description: V(add), V(update) or V(remove) (V(update) when the labels change in different ways).
      type: str
    label:
      description: The label.
      type: str
    old_value:
      description: Current value.
      type: str
    new_value:
      description: Value after the patch (null when removed).
      type: str
    labels:
      description: Every label the patch changes, each with C(old_value) and C(new_value).
      type: dict
    patch:
      description: Merge patch for the Node (labels and the managed-labels annotation).
      type: dict
discovery_warnings:
  description: Problems found, each with C(code), C(node) (or null) and C(message).
  returned: always
  type: list
  elements: dict
summary:
  description: Counts over the cluster (nodes_total, gpu_nodes, cpu_nodes, gpu_types, gpus_total,
    gpus_schedulable, gpus_free, vendors, k3s_nodes, allocations_read, api_pages).
  returned: always
  type: dict
is_k3s:
  description: Every node runs a k3s kubelet.
  returned: always
  type: bool
accelerator_label:
  description: The accelerator label used.
  returned: always
  type: str
  sample: k8s.amazonaws.com/accelerator
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import (
    AUTH_ARG_SPEC,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (
    get_api_client,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import (
    AnsibleK8SModule,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import (
    CoreException,
)
from ansible_collections.llmops.serving.plugins.module_utils.gpu import (
    DEFAULT_ACCELERATOR_LABEL,
    DiscoveryError,
)
from ansible_collections.llmops.serving.plugins.module_utils.gpu_discovery import discover
from ansible_collections.llmops.serving.plugins.module_utils.gpu_k8s import (
    GpuDiscoveryApiError,
    TransportError,
    list_gpu_allocations,
    list_nodes,
    unreachable_message,
)
from ansible_collections.llmops.serving.plugins.module_utils.gpu_node import build_options


def argspec():
    args = copy.deepcopy(AUTH_ARG_SPEC)
    args.update(
        accelerator_label=dict(type="str", default=DEFAULT_ACCELERATOR_LABEL),
        gpu_type_overrides=dict(type="dict", default={}),
        label_aliases=dict(type="dict", default={}),
        llm_engine_gpu_types=dict(type="dict", default={}),
        plan_labels=dict(type="bool", default=False),
        include_allocations=dict(type="bool", default=False),
        page_size=dict(type="int", default=500),
    )
    return args


def run(module):
    params = module.params
    if params["page_size"] < 1:
        module.fail_json(msg="page_size must be at least 1 (got %d)" % params["page_size"])
    try:
        options = build_options(
            accelerator_label=params["accelerator_label"],
            gpu_type_overrides=params["gpu_type_overrides"],
            label_aliases=params["label_aliases"],
            plan_labels=params["plan_labels"],
            llm_engine_gpu_types=params["llm_engine_gpu_types"],
        )
    except DiscoveryError as exc:
        module.fail_json(msg=str(exc))
    try:
        client = get_api_client(module)
    except CoreException:
        raise
    except TransportError as exc:  # the client's discovery requests could not reach the server
        module.fail_json(msg=unreachable_message(exc))
    api_client = client.client.client
    try:
        nodes, node_pages = list_nodes(api_client, params["page_size"])
        allocations, pod_pages = None, 0
        if params["include_allocations"]:
            allocations, pod_pages = list_gpu_allocations(api_client, params["page_size"])
    except GpuDiscoveryApiError as exc:
        module.fail_json(msg=str(exc))
    result = discover(nodes, options, allocations)
    for warning in result["warnings"]:
        module.warn(warning["message"])
    result["summary"]["api_pages"] = {"nodes": node_pages, "pods": pod_pages}
    result["nodes"].sort(key=lambda r: r["name"])
    module.exit_json(
        changed=False,
        nodes=result["nodes"],
        gpu_types=result["gpu_types"],
        recommended_hardware=result["recommended_hardware"],
        label_changes=result["label_changes"],
        discovery_warnings=result["warnings"],
        summary=result["summary"],
        is_k3s=result["is_k3s"],
        accelerator_label=result["accelerator_label"],
    )


def main():
    module = AnsibleK8SModule(argument_spec=argspec(), supports_check_mode=True)
    try:
        run(module)
    except CoreException as exc:
        module.fail_from_exception(exc)


if __name__ == "__main__":
    main()
