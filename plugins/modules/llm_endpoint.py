#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE) or GNU General Public License v3.0+
# (see https://www.gnu.org/licenses/gpl-3.0.txt), at your option.
# SPDX-License-Identifier: Apache-2.0 OR GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: llm_endpoint
short_description: Create, update or delete an LLM Engine model endpoint and wait until it serves
version_added: 0.1.0
description:
  - Manages one LLM endpoint through the LLM Engine gateway API (C(/v1/llm/model-endpoints)).
  - Validates every rule the server enforces before sending anything, because the server silently
    drops fields it does not know and rejects common defaults (for example C(endpoint_type=sync) for
    vLLM). Each error names the option and the fix.
  - Idempotent. Reads the endpoint by name, compares the options you set with what the server reports,
    and sends a PUT with only the fields that differ, or nothing. Options you leave unset are not
    managed on an existing endpoint.
  - Fields LLM Engine cannot change on an existing endpoint (O(inference_framework), O(endpoint_type),
    O(nodes_per_worker)) fail with a clear message unless O(recreate=true).
  - Waits (O(wait)) until the endpoint has status C(READY) B(and) enough available workers, because
    C(READY) alone only means the Kubernetes objects exist. The count needed is O(wait_for_workers),
    by default C(min(max(min_workers, 1), max_workers)). Fails at once on C(UPDATE_FAILED) with the
    server's C(status_reason); on timeout reports the last status, worker counts and reason (for
    example why the workers' pods are Pending).
author:
  - llmops.serving contributors (!UNKNOWN)
extends_documentation_fragment:
  - llmops.serving.llm_engine
attributes:
  check_mode:
    support: full
    description: Reads the endpoint and reports what would be created, changed or deleted; sends no write.
  diff_mode:
    support: full
    description: Before and after of the managed fields.
options:
  name:
    description:
      - Endpoint name, unique per user id. Lowercase letters, digits and C(-), at most 63 characters
        (LLM Engine puts it into Kubernetes object names and labels).
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the endpoint; V(absent) deletes it (and with O(wait) waits until
        it is gone).
    type: str
    default: present
    choices: [present, absent]
  model_name:
    description:
      - Model name, for example V(llama-3-8b-instruct). Required to create.
    type: str
  inference_framework:
    description:
      - Inference framework serving the model. Required to create; cannot change in place.
    type: str
    choices: [vllm, sglang, text_generation_inference, deepspeed, lightllm, tensorrt_llm]
  inference_framework_image_tag:
    description:
      - Image tag of the framework. Required to create. V(latest) is refused, since the server resolves
        it to a concrete tag at create time and the endpoint would never match the playbook again.
    type: str
  checkpoint_path:
    description:
      - Where the weights are, an V(s3://bucket/prefix) (any S3-compatible store), V(gs://) or V(azure://)
        path to the directory holding the C(*.safetensors) files. Not a C(.tar) file.
    type: str
  endpoint_type:
    description:
      - Endpoint type. Defaults to V(streaming) for vllm, text_generation_inference, lightllm and
        tensorrt_llm (the only type LLM Engine creates for them) and to V(sync) otherwise. Cannot change
        in place.
    type: str
    choices: [sync, async, streaming]
  gpus:
    description:
      - GPUs per worker. Hardware is all or nothing. Set O(gpus), O(gpu_type), O(cpus), O(memory),
        O(storage) and O(nodes_per_worker) together, or none of them to let LLM Engine pick hardware
        for the model from its recommended-hardware ConfigMap.
    type: int
  gpu_type:
    description:
      - LLM Engine GPU type. Worker pods get the node selector C(k8s.amazonaws.com/accelerator=<gpu_type>),
        so some node must carry that label. V(nvidia-ampere-a100e) is refused on create by LLM Engine.
    type: str
    choices: [nvidia-tesla-t4, nvidia-ampere-a10, nvidia-ampere-a100, nvidia-ampere-a100e, nvidia-hopper-h100,
              nvidia-hopper-h100-1g20gb, nvidia-hopper-h100-3g40gb]
  cpus:
    description:
      - CPUs per worker as a Kubernetes quantity (V(4), V(3500m)). Compared by amount.
      - With the forwarder sidecar's 1 CPU it must fit the GPU type's instance limit (for example 62 on
        V(nvidia-ampere-a10)).
    type: raw
  memory:
    description:
      - Memory per worker as a Kubernetes quantity (V(16Gi)). Compared by amount.
    type: raw
  storage:
    description:
      - Ephemeral storage per worker as a Kubernetes quantity (V(100Gi)). Compared by amount.
    type: raw
  nodes_per_worker:
    description:
      - Nodes per worker; more than 1 only for vllm. Cannot change in place.
    type: int
  num_shards:
    description:
      - Shards the model is split into. Must equal O(gpus), and defaults to it.
    type: int
  min_workers:
    description:
      - Minimum number of workers. Required to create.
      - V(0) on a sync or streaming endpoint needs a gateway that scales from zero (see O(scale_from_zero)).
    type: int
  max_workers:
    description:
      - Maximum number of workers, 1 to 250 (LLM Engine's limit). Required to create.
    type: int
  per_worker:
    description:
      - Concurrent requests per worker before the autoscaler adds a worker. Required to create.
    type: int
  labels:
    description:
      - Labels of the endpoint. Required to create; must hold C(team) and C(product), must not hold
        C(user_id) or C(endpoint_name); values must be valid Kubernetes label values.
      - Compared as a whole. A PUT replaces all labels.
    type: dict
  metadata:
    description:
      - Free-form metadata. Keys C(_llm) and C(_CONVERTED_FROM_ARTIFACT_LIKE) are reserved.
      - Only the keys given here are compared. The server merges metadata on update, so keys cannot be
        removed.
    type: dict
  quantize:
    description:
      - Quantization; vllm supports only V(awq), text_generation_inference only V(bitsandbytes).
    type: str
    choices: [bitsandbytes, awq]
  public_inference:
    description:
      - Whether other users may run inference on the endpoint. The server's default is V(true).
    type: bool
  engine_args:
    description:
      - vLLM engine arguments (only with O(inference_framework=vllm)). Unknown names are refused,
        because the server would drop them silently.
      - Compared only when the server reports the endpoint's engine arguments (newer LLM Engine
        releases keep them in the endpoint's metadata); otherwise a warning says changes cannot be
        detected. A change is sent with C(force_bundle_recreation) so the server applies it.
    type: dict
    suboptions:
      max_model_len:
        description: Model context length; derived from the model config when unset.
        type: int
      max_num_seqs:
        description: Maximum number of sequences per iteration.
        type: int
      max_num_batched_tokens:
        description: Maximum number of batched tokens per iteration.
        type: int
      enforce_eager:
        description: Always use eager-mode PyTorch (no CUDA graphs).
        type: bool
      trust_remote_code:
        description: Trust remote code from the Hugging Face hub (models whose code transformers does not ship).
        type: bool
      pipeline_parallel_size:
        description: Number of pipeline stages.
        type: int
      tensor_parallel_size:
        description: Number of tensor parallel replicas.
        type: int
      quantization:
        description: Method used to quantize the weights (vLLM's own option, not O(quantize)).
        type: str
      disable_log_requests:
        description: Disable logging of requests.
        type: bool
      chat_template:
        description: Jinja chat template; the checkpoint's template when unset.
        type: str
      tool_call_parser:
        description: Tool call parser.
        type: str
      enable_auto_tool_choice:
        description: Enable automatic tool choice.
        type: bool
      load_format:
        description: Format of the model weights to load (V(auto), V(pt), V(safetensors), ...).
        type: str
      config_format:
        description: Format of the model config to load.
        type: str
      tokenizer_mode:
        description: Tokenizer mode (V(auto), V(slow), V(mistral)).
        type: str
      limit_mm_per_prompt:
        description: Maximum number of multimodal items per modality per prompt.
        type: str
      tokenizer:
        description: Name or path of the Hugging Face tokenizer.
        type: str
      dtype:
        description: Data type of weights and activations (V(auto), V(half), V(bfloat16), ...).
        type: str
      seed:
        description: Random seed.
        type: int
      revision:
        description: Model revision (branch, tag or commit).
        type: str
      code_revision:
        description: Revision of the model code on the Hugging Face hub.
        type: str
      rope_scaling:
        description: RoPE scaling configuration.
        type: dict
      tokenizer_revision:
        description: Tokenizer revision.
        type: str
      quantization_param_path:
        description: JSON file with KV cache scaling factors.
        type: str
      max_seq_len_to_capture:
        description: Maximum sequence length covered by CUDA graphs.
        type: int
      disable_sliding_window:
        description: Disable the sliding window.
        type: bool
      skip_tokenizer_init:
        description: Skip tokenizer and detokenizer initialisation.
        type: bool
      served_model_name:
        description: Model name used in the API and metrics.
        type: str
      override_neuron_config:
        description: Neuron config overrides.
        type: dict
      mm_processor_kwargs:
        description: Arguments for the multimodal processor.
        type: dict
      block_size:
        description: Size of a KV cache block in tokens.
        type: int
      gpu_memory_utilization:
        description: Fraction of GPU memory vLLM may use, in (0, 1].
        type: float
      swap_space:
        description: CPU swap space per GPU in GiB.
        type: float
      cache_dtype:
        description: Data type of the KV cache.
        type: str
      num_gpu_blocks_override:
        description: Number of GPU blocks to use instead of the profiled number.
        type: int
      enable_prefix_caching:
        description: Enable automatic prefix caching.
        type: bool
      max_gpu_memory_utilization:
        description: Deprecated upper bound of GPU memory utilisation (use O(engine_args.gpu_memory_utilization)).
        type: float
      attention_backend:
        description: Attention backend (for example V(FLASHINFER)).
        type: str
  scale_from_zero:
    description:
      - Whether the gateway can scale sync and streaming endpoints from zero workers, which it can only
        when its C(prometheus_server_address) is set. Only then is O(min_workers=0) allowed for them.
    type: bool
    default: false
  recreate:
    description:
      - Allow deleting and re-creating the endpoint when a field that cannot change in place differs.
        The endpoint does not serve in between.
    type: bool
    default: false
  wait:
    description:
      - Wait until the endpoint serves (O(state=present)) or is gone (O(state=absent)).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait in total (including a re-create's delete).
    type: int
    default: 900
  wait_for_workers:
    description:
      - Available workers needed before the endpoint counts as serving. Defaults to
        C(min(max(min_workers, 1), max_workers)). Set V(0) for endpoints that scale from zero, whose
        workers start only with traffic.
    type: int
seealso:
  - module: llmops.serving.llm_endpoint_info
  - name: LLM Engine API
    description: The model endpoint API of LLM Engine.
    link: https://scaleapi.github.io/llm-engine/
"""

EXAMPLES = r"""
- name: Serve Llama 3 8B with vLLM on one A10 GPU per worker
  llmops.serving.llm_endpoint:
    url: http://model-engine.llm-engine.svc.cluster.local
    user_id: platform-team
    name: llama-3-8b
    model_name: llama-3-8b-instruct
    inference_framework: vllm
    inference_framework_image_tag: 0.6.3.post1
    checkpoint_path: s3://models/llama-3-8b-instruct
    gpus: 1
    gpu_type: nvidia-ampere-a10
    cpus: "6"
    memory: 24Gi
    storage: 80Gi
    nodes_per_worker: 1
    min_workers: 1
    max_workers: 2
    per_worker: 10
    labels:
      team: platform
      product: chat
    engine_args:
      max_model_len: 8192
      gpu_memory_utilization: 0.9
    wait_timeout: 1200

- name: Scale it out (sends one PUT with max_workers only)
  llmops.serving.llm_endpoint:
    url: "{{ llm_engine_url }}"
    user_id: "{{ llm_engine_user_id }}"
    name: llama-3-8b
    max_workers: 4

- name: Remove it and wait until it is gone
  llmops.serving.llm_endpoint:
    url: "{{ llm_engine_url }}"
    user_id: "{{ llm_engine_user_id }}"
    name: llama-3-8b
    state: absent
"""

RETURN = r"""
endpoint:
  description:
    - The endpoint as the API returns it after the run (after waiting, when O(wait=true)). Empty when
      absent.
  returned: always
  type: dict
  sample:
    id: end_abc123
    name: llama-3-8b
    model_name: llama-3-8b-instruct
    status: READY
    inference_framework: vllm
    inference_framework_image_tag: 0.6.3.post1
    num_shards: 1
    spec:
      endpoint_type: streaming
      deployment_state: {min_workers: 1, max_workers: 2, per_worker: 10, available_workers: 1, unavailable_workers: 0}
      resource_state: {cpus: "6", gpus: 1, gpu_type: nvidia-ampere-a10, memory: 24Gi, storage: 80Gi,
                       nodes_per_worker: 1}
operation:
  description: What the run did (or would do in check mode).
  returned: when O(state=present)
  type: str
  sample: update
  choices: [create, update, recreate, none]
changes:
  description: Each managed field that differed, with the server's value before and the wanted value after.
  returned: when O(state=present)
  type: dict
  sample: {max_workers: {before: 2, after: 4}}
request_body:
  description: The body of the POST or PUT that was sent (or would be, in check mode).
  returned: when something is created or updated
  type: dict
  sample: {inference_framework: vllm, max_workers: 4}
requests:
  description: The API calls made, with their HTTP status (V(null) for connection errors and timeouts).
  returned: always
  type: list
  elements: dict
  sample: [{method: GET, path: /v1/llm/model-endpoints/llama-3-8b, status: 200}]
waited:
  description: Seconds spent waiting for the endpoint to serve.
  returned: when waited for
  type: float
  sample: 42.5
errors:
  description: Every validation error, when the options break a server rule.
  returned: on validation failure
  type: list
  elements: str
status:
  description: HTTP status of the failed API call.
  returned: on API failure
  type: int
  sample: 400
detail:
  description: The server's C(detail) of the failed API call.
  returned: on API failure
  type: str
  sample: The specified model endpoint already exists.
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.serving.plugins.module_utils.llm_engine import (
    endpoint_spec,
    llm_engine_connection_spec,
    run_endpoint,
)


def main():
    argument_spec = llm_engine_connection_spec()
    argument_spec.update(endpoint_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_endpoint(module)


if __name__ == "__main__":
    main()
