# llmops.serving: one entry point for setting up, testing and demoing the collection.
#   make demo   dependencies, local sandbox cluster, playbooks/site.yml against it, summary
#   make test   dependencies, lint, sanity, unit, contract, sandbox integration, drills, molecule, guides
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONDONTWRITEBYTECODE := 1
# Two sandboxes that never share state: the demo's (.sandbox, what `make demo` leaves running to
# explore) and the tests' (.sandbox-test, what integration, drills, molecule and bench start, use and
# purge). So `make demo && make test && make demo` and `make test` twice in a row do not meet each
# other's endpoints, GPU capacity or cluster-scoped objects.
DEMO_SANDBOX_DIR ?= $(CURDIR)/.sandbox
TEST_SANDBOX_DIR ?= $(CURDIR)/.sandbox-test
DEMO_SANDBOX := LLMOPS_SANDBOX_DIR=$(DEMO_SANDBOX_DIR) $(PY) tests/sandbox/sandbox.py
# The pinned LLM Engine checkout (chart + server) everything is built and tested against; `make upstream`
# clones it into the sandbox cache when neither this variable nor ../shared/upstream/llm-engine has it.
LLMOPS_UPSTREAM_LLM_ENGINE ?= $(shell bash tests/scripts/upstream-llm-engine.sh path)
export LLMOPS_UPSTREAM_LLM_ENGINE
TEST_SANDBOX := LLMOPS_SANDBOX_DIR=$(TEST_SANDBOX_DIR) $(PY) tests/sandbox/sandbox.py
# a sandbox's kubectl/helm first on PATH, its KUBECONFIG and S3 settings and its directory in the environment
WITH_DEMO_SANDBOX := export LLMOPS_SANDBOX_DIR=$(DEMO_SANDBOX_DIR) && set -a && source <($(DEMO_SANDBOX) env) && \
	set +a && export PATH="$$SANDBOX_BIN_PATH:$$PATH" &&
WITH_TEST_SANDBOX := export LLMOPS_SANDBOX_DIR=$(TEST_SANDBOX_DIR) && set -a && source <($(TEST_SANDBOX) env) && \
	set +a && export PATH="$$SANDBOX_BIN_PATH:$$PATH" &&

.PHONY: help deps deps-system deps-python collection-link sandbox-build sandbox-up sandbox-down \
	sandbox-purge sandbox-status upstream test-sandbox-up test-sandbox-purge lint sanity unit contract integration drills molecule guides test demo demo-run \
	demo-summary bench vllm-data docs build-collection clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 22

deps: deps-system deps-python collection-link sandbox-build upstream  ## everything the tests and the demo need

deps-system:  ## Debian packages from bindep.txt (redis-server, postgresql for contract tests)
	@bash tests/scripts/install-system-deps.sh

deps-python: $(VENV)/.installed  ## .venv with requirements-dev.txt

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

upstream:  ## the pinned LLM Engine checkout (LLMOPS_UPSTREAM_LLM_ENGINE; cloned into the cache when absent)
	@bash tests/scripts/upstream-llm-engine.sh fetch

collection-link:  ## expose the checkout as llmops.serving under .collections
	@mkdir -p .collections/ansible_collections/llmops
	@ln -sfn ../../.. .collections/ansible_collections/llmops/serving

sandbox-build: deps-python upstream  ## build the sandbox binaries and the LLM Engine server venv once (cached outside the checkout)
	$(DEMO_SANDBOX) build

sandbox-up: deps-python collection-link  ## start the demo sandbox cluster (idempotent)
	$(DEMO_SANDBOX) up

sandbox-down:  ## stop the demo sandbox processes (keeps its data in .sandbox)
	@if [ -x $(PY) ]; then $(DEMO_SANDBOX) down; fi

sandbox-purge:  ## stop the demo sandbox and delete its data
	@if [ -x $(PY) ]; then $(DEMO_SANDBOX) down --purge; fi

sandbox-status:  ## what runs in the demo sandbox, and its nodes
	$(DEMO_SANDBOX) status

test-sandbox-up: deps-python collection-link  ## start the tests' own sandbox (.sandbox-test; idempotent)
	$(TEST_SANDBOX) up

test-sandbox-purge:  ## stop the tests' sandbox and delete its data
	@if [ -x $(PY) ]; then $(TEST_SANDBOX) down --purge; fi

lint: deps-python collection-link  ## yamllint, ruff, ansible-lint --profile production
	yamllint --strict .
	ruff check .
	pycodestyle --max-line-length 160 --ignore E402,W503,W504,E741,E203,E701,E704 --exclude .venv,.collections,.sandbox,.sandbox-test,.sandbox-guides,build,.ansible .
	ansible-lint --profile production
	antsibull-changelog lint

sanity: deps-python  ## ansible-test sanity in a temporary ansible_collections tree
	bash tests/scripts/sanity.sh

unit: deps-python collection-link  ## unit tests (pure logic, no network)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

contract: deps-python deps-system collection-link upstream  ## real redis-server/postgres against the roles' config
	@if [ -d tests/contract ]; then $(PY) -m pytest tests/contract -q -m contract $(PYTEST_ARGS); \
	else echo "no contract tests yet"; fi

integration: test-sandbox-up upstream  ## sandbox self-tests and module/role tests against the tests' sandbox
	$(WITH_TEST_SANDBOX) $(PY) -m pytest tests/sandbox tests/integration -q $(PYTEST_ARGS)

drills: test-sandbox-up upstream  ## reliability and security drills (tests/drills): faults, hostile input, secret scans
	$(WITH_TEST_SANDBOX) $(PY) -m pytest tests/drills -q $(PYTEST_ARGS)

molecule: deps-python collection-link sandbox-build upstream  ## molecule default scenario (the tests' sandbox; purged at the end)
	LLMOPS_SANDBOX_DIR=$(TEST_SANDBOX_DIR) molecule test -s default

# Each guide test starts its own sandbox, shaped like the guide's cluster, in .sandbox-guides/<guide>/
# (one at a time, about 10 s each with the cached binaries) and purges it at the end.
guides: deps-python collection-link sandbox-build upstream  ## the guides' own commands (docs/*.md) on sandboxes shaped like their clusters
	$(PY) -m pytest tests/guides -q $(PYTEST_ARGS)

test: deps lint sanity unit contract integration drills molecule guides  ## all tests

demo: deps sandbox-up demo-run demo-summary  ## sandbox + site.yml + summary; leaves the sandbox running

demo-run: upstream
	$(WITH_DEMO_SANDBOX) ansible-playbook playbooks/site.yml -i inventories/sandbox

demo-summary:
	@$(WITH_DEMO_SANDBOX) ansible-playbook playbooks/status.yml -i inventories/sandbox

bench: deps test-sandbox-up  ## every benchmark (in the tests' sandbox); regenerates benchmarks/README.md
	$(WITH_TEST_SANDBOX) $(PY) benchmarks/run_all.py

VLLM_VERSION ?= 0.10.2
VLLM_GEN_VENV ?= /tmp/llmops-vllm-gen-$(VLLM_VERSION)
vllm-data:  ## regenerate plugins/module_utils/vllm_releases/vllm-$(VLLM_VERSION).json from the real vLLM (venv outside the checkout)
	python3 -m venv $(VLLM_GEN_VENV)
	$(VLLM_GEN_VENV)/bin/pip install -q --no-deps vllm==$(VLLM_VERSION) runai-model-streamer==0.17.1 runai-model-streamer-s3==0.17.1
	$(VLLM_GEN_VENV)/bin/pip install -q -r tests/fixtures/vllm/requirements-generate.txt
	$(VLLM_GEN_VENV)/bin/python tests/fixtures/vllm/generate.py

docs: deps-python  ## regenerate docs/variables.md from argument specs and module docs
	$(PY) docs/generate_reference.py

build-collection: deps-python  ## ansible-galaxy collection build into build/
	ansible-galaxy collection build --force --output-path build/

clean: sandbox-down
	@if [ -x $(PY) ]; then $(TEST_SANDBOX) down; fi
	@if [ -x $(PY) ]; then for dir in .sandbox-guides/*/; do [ -d "$$dir" ] && LLMOPS_SANDBOX_DIR=$(CURDIR)/$$dir $(PY) tests/sandbox/sandbox.py down --purge; done; fi
	rm -rf .collections build tests/output .pytest_cache .ruff_cache .sandbox-guides ee/context
