#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.serving contributors
# Apache License 2.0 (see LICENSE) or GNU General Public License v3.0+
# (see https://www.gnu.org/licenses/gpl-3.0.txt), at your option.
# SPDX-License-Identifier: Apache-2.0 OR GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: llm_endpoint_info
short_description: Read LLM Engine model endpoints
version_added: 0.1.0
description:
  - Reads one LLM endpoint by name, or all endpoints of the user id, through the LLM Engine gateway
    API, and returns them as the API does.
author:
  - llmops.serving contributors (!UNKNOWN)
extends_documentation_fragment:
  - llmops.serving.llm_engine
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Returns no diff.
options:
  name:
    description:
      - Endpoint to read. When unset, all endpoints of the user id are returned.
      - A missing endpoint gives an empty list, not an error.
    type: str
  order_by:
    description:
      - Order of the list when O(name) is unset.
    type: str
    choices: [newest, oldest, alphabetical]
seealso:
  - module: llmops.serving.llm_endpoint
"""

EXAMPLES = r"""
- name: Read one endpoint
  llmops.serving.llm_endpoint_info:
    url: http://model-engine.llm-engine.svc.cluster.local
    user_id: platform-team
    name: llama-3-8b
  register: llama

- name: Show its status and available workers
  ansible.builtin.debug:
    msg: "{{ llama.endpoints[0].status }} {{ llama.endpoints[0].spec.deployment_state.available_workers }}"
  when: llama.endpoints | length > 0

- name: List all endpoints of the user, newest first
  llmops.serving.llm_endpoint_info:
    url: http://model-engine.llm-engine.svc.cluster.local
    user_id: platform-team
    order_by: newest
  register: all_endpoints
"""

RETURN = r"""
endpoints:
  description: The endpoints as the API returns them (see the LLM Engine API for every field).
  returned: always
  type: list
  elements: dict
  sample:
    - id: end_abc123
      name: llama-3-8b
      model_name: llama-3-8b-instruct
      status: READY
      inference_framework: vllm
      spec:
        endpoint_type: streaming
        deployment_state: {min_workers: 1, max_workers: 2, per_worker: 10, available_workers: 1, unavailable_workers: 0}
requests:
  description: The API calls made, with their HTTP status.
  returned: always
  type: list
  elements: dict
  sample: [{method: GET, path: /v1/llm/model-endpoints/llama-3-8b, status: 200}]
status:
  description: HTTP status of the failed API call.
  returned: on API failure
  type: int
  sample: 503
detail:
  description: The server's C(detail) of the failed API call.
  returned: on API failure
  type: str
  sample: Service unavailable
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.serving.plugins.module_utils.llm_engine import (
    llm_engine_connection_spec,
    run_endpoint_info,
)


def main():
    argument_spec = llm_engine_connection_spec()
    argument_spec.update(
        name=dict(type="str"),
        order_by=dict(type="str", choices=["newest", "oldest", "alphabetical"]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_endpoint_info(module)


if __name__ == "__main__":
    main()
