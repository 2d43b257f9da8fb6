#!/usr/bin/env bash
# The pinned LLM Engine checkout (github.com/scaleapi/llm-engine) the collection is built and tested
# against: its chart charts/model-engine and its server package model-engine/.
#
#   upstream-llm-engine.sh path    print the checkout's path (it may not exist yet)
#   upstream-llm-engine.sh fetch   make sure it exists: clone the pinned commit into the cache when the
#                                  default places are empty, or fail saying what to set
#
# Where: $LLMOPS_UPSTREAM_LLM_ENGINE when set; else ../shared/upstream/llm-engine next to the checkout
# when it exists; else ${LLMOPS_SANDBOX_CACHE:-~/.cache/llmops-sandbox}/upstream/llm-engine-<commit>.
set -euo pipefail

PIN=a82369619a365b79a45e49ef6af1045653102615
URL=https://github.com/scaleapi/llm-engine.git
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${LLMOPS_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-sandbox}

where() {
  if [[ -n "${LLMOPS_UPSTREAM_LLM_ENGINE:-}" ]]; then
    echo "$LLMOPS_UPSTREAM_LLM_ENGINE"
  elif [[ -d "$REPO_ROOT/../shared/upstream/llm-engine/charts/model-engine" ]]; then
    (cd "$REPO_ROOT/../shared/upstream/llm-engine" && pwd)
  else
    echo "$CACHE/upstream/llm-engine-${PIN:0:8}"
  fi
}

case "${1:-path}" in
  path) where ;;
  fetch)
    dir=$(where)
    if [[ -f "$dir/charts/model-engine/Chart.yaml" ]]; then
      exit 0
    fi
    if [[ -n "${LLMOPS_UPSTREAM_LLM_ENGINE:-}" ]]; then
      echo "LLMOPS_UPSTREAM_LLM_ENGINE=$LLMOPS_UPSTREAM_LLM_ENGINE has no charts/model-engine/Chart.yaml:" \
           "point it at a checkout of $URL at commit $PIN, or unset it to let make clone one" >&2
      exit 1
    fi
    echo "cloning $URL at $PIN into $dir" >&2
    tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$dir")"
    if ! { git init -q "$tmp" && git -C "$tmp" fetch -q --depth 1 "$URL" "$PIN" && git -C "$tmp" checkout -q FETCH_HEAD; }; then
      rm -rf "$tmp"
      echo "could not clone $URL at $PIN (no network?): set LLMOPS_UPSTREAM_LLM_ENGINE to a checkout of that" \
           "commit (e.g. ../shared/upstream/llm-engine)" >&2
      exit 1
    fi
    mv "$tmp" "$dir"
    ;;
  *) echo "usage: $0 path|fetch" >&2; exit 2 ;;
esac
