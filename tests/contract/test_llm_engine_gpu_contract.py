"""The GPU types, limits and node label of plugins/module_utils/gpu.py against the pinned LLM Engine source.

The pinned checkout is found by tests/helpers/upstream.py (LLMOPS_UPSTREAM_LLM_ENGINE, else
../shared/upstream/llm-engine, else the clone ``make upstream`` leaves in the sandbox cache). Its
``GpuType`` enum is imported from its own file (the module needs nothing but ``enum``); the files
with heavy imports are parsed with ``ast``. Every test fails when the collection's table and
upstream's code disagree.
"""

import ast
import importlib.util
import os
import re

import pytest
from ansible_collections.llmops.serving.plugins.module_utils import gpu

from tests.helpers.upstream import upstream_dir

# `make contract` selects by this marker: without it these tests never ran in make test
pytestmark = pytest.mark.contract

SERVER = os.path.join("model-engine", "model_engine_server")
GPU_TYPE_PY = os.path.join(SERVER, "domain", "entities", "gpu_type.py")
RESOURCE_LIMITS_PY = os.path.join(SERVER, "common", "resource_limits.py")
USE_CASES_PY = os.path.join(SERVER, "domain", "use_cases", "llm_model_endpoint_use_cases.py")
RESOURCE_TYPES_PY = os.path.join(SERVER, "infra", "gateways", "resources", "k8s_resource_types.py")
SERVICE_TEMPLATE = os.path.join("charts", "model-engine", "templates", "service_template_config_map.yaml")


def upstream(path):
    full = os.path.join(upstream_dir(), path)
    if not os.path.isfile(full):
        pytest.fail("pinned LLM Engine file %s not found: point LLMOPS_UPSTREAM_LLM_ENGINE at a checkout of "
                    "github.com/scaleapi/llm-engine at the pinned commit (see shared/upstream/README.md)" % full)
    return full


def parse(path):
    with open(upstream(path), encoding="utf-8") as handle:
        return ast.parse(handle.read())


@pytest.fixture(scope="module")
def gpu_type_enum():
    spec = importlib.util.spec_from_file_location("upstream_gpu_type", upstream(GPU_TYPE_PY))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GpuType


def test_llm_engine_gpu_types_are_upstreams_enum(gpu_type_enum):
    assert tuple(member.value for member in gpu_type_enum) == gpu.LLM_ENGINE_GPU_TYPES


def test_every_accelerator_value_discovery_can_write_is_accepted(gpu_type_enum):
    """Whatever the product, the decision yields an enum value (or nothing), and the MIG and
    refused-on-create tables name enum members only."""
    accepted = set(member.value for member in gpu_type_enum)
    decided = set(gpu.decide_llm_engine_type(t)[0] for t in gpu.GPU_SPECS) - {None}
    assert decided and decided <= accepted
    assert set(gpu.LLM_ENGINE_MIG_TYPES) <= accepted
    assert set(gpu.LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE) <= accepted
    assert set(gpu.LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE.values()) <= accepted


def _enum_names(gpu_type_enum):
    return dict((member.name, member.value) for member in gpu_type_enum)


def _literal_dict_call(node):
    """dict(cpus=63, memory="250Gi") -> {"cpus": 63, "memory": "250Gi"}."""
    assert isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict", ast.dump(node)
    return dict((kw.arg, ast.literal_eval(kw.value)) for kw in node.keywords)


def test_instance_limits_and_forwarder_usage_are_upstreams(gpu_type_enum):
    """common/resource_limits.py: per-type dict(cpus=, memory=[, storage=]) limits, STORAGE_LIMIT as
    the storage default, the FORWARDER_* usage, and REQUESTS_BY_GPU_TYPE tying them to GpuType."""
    tree = parse(RESOURCE_LIMITS_PY)
    assigned = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned[node.targets[0].id] = node.value
    storage_default = ast.literal_eval(assigned["STORAGE_LIMIT"])
    names = _enum_names(gpu_type_enum)
    upstream_limits = {}
    requests = assigned["REQUESTS_BY_GPU_TYPE"]
    for key, value in zip(requests.keys, requests.values, strict=True):
        if isinstance(key, ast.Constant) and key.value is None:
            continue  # CPU-only
        assert isinstance(key, ast.Attribute) and key.value.id == "GpuType", ast.dump(key)
        limits = _literal_dict_call(assigned[value.id])
        upstream_limits[names[key.attr]] = (str(limits["cpus"]), limits["memory"],
                                            limits.get("storage", storage_default))
    assert upstream_limits == gpu.LLM_ENGINE_INSTANCE_LIMITS
    forwarder = tuple(str(ast.literal_eval(assigned[name])) for name in (
        "FORWARDER_CPU_USAGE", "FORWARDER_MEMORY_USAGE", "FORWARDER_STORAGE_USAGE"))
    assert forwarder == gpu.LLM_ENGINE_FORWARDER_USAGE


def test_types_refused_on_create_are_upstreams(gpu_type_enum):
    """CreateLLMModelEndpointV1UseCase.execute raises for ``request.gpu_type == GpuType.X``; its message
    names the type to use instead."""
    names = _enum_names(gpu_type_enum)
    tree = parse(USE_CASES_PY)
    use_case = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CreateLLMModelEndpointV1UseCase"][0]
    execute = [n for n in use_case.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "execute"][0]
    refused = {}
    for node in ast.walk(execute):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)):
            continue
        left, comparator = node.test.left, node.test.comparators[0]
        if not (isinstance(left, ast.Attribute) and left.attr == "gpu_type" and isinstance(node.test.ops[0], ast.Eq)):
            continue
        assert isinstance(node.body[0], ast.Raise), "a gpu_type comparison that does not refuse"
        message = " ".join(c.value for c in ast.walk(node.body[0]) if isinstance(c, ast.Constant)
                           and isinstance(c.value, str))
        instead = re.search(r"request for (\w+) instead", message).group(1).lower()
        refused[names[comparator.attr]] = [v for v in gpu.LLM_ENGINE_GPU_TYPES if v.endswith("-" + instead)][0]
    assert refused == gpu.LLM_ENGINE_GPU_TYPES_REJECTED_ON_CREATE


def test_endpoint_pods_select_the_accelerator_label_with_the_gpu_type_value():
    """The chart's service templates put ``<label>: ${GPU_TYPE}`` in the endpoint pods' nodeSelector, and
    the endpoint builder fills GPU_TYPE with the request's GpuType value: the label must be the one
    discovery writes, and its value a GpuType value."""
    with open(upstream(SERVICE_TEMPLATE), encoding="utf-8") as handle:
        selector_keys = set(re.findall(r"^\s*([\w./-]+): \$\{GPU_TYPE\}\s*$", handle.read(), re.MULTILINE))
    assert selector_keys == {gpu.DEFAULT_ACCELERATOR_LABEL}
    filled = []
    for node in ast.walk(parse(RESOURCE_TYPES_PY)):
        if isinstance(node, ast.keyword) and node.arg == "GPU_TYPE":
            filled.append(ast.unparse(node.value))
    assert filled and set(filled) == {"build_endpoint_request.gpu_type.value"}
