#!/usr/bin/env bash
# ansible-test sanity for llmops.serving, run where ansible-test wants a collection to be:
# a temporary ansible_collections/llmops/serving tree holding the tracked files, with the
# collections we depend on (from the `ansible` package in .venv) beside it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${VENV:-$repo/.venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/llmops/serving"
mkdir -p "$dest"
cd "$repo"
# tracked and not-yet-committed files alike, but nothing ignored (venv, sandbox data)
git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$dest/" 2>/dev/null || true
site="$("$venv/bin/python" -c 'import ansible_collections, os; print([p for p in ansible_collections.__path__ if "site-packages" in p][0])')"
for dep in kubernetes/core amazon/aws community/aws community/crypto; do
  mkdir -p "$work/ansible_collections/$(dirname "$dep")"
  cp -r "$site/$dep" "$work/ansible_collections/$dep"
done
cd "$dest"
git init -q && git add -A >/dev/null && git -c user.name=ci -c user.email=ci@invalid commit -qm sanity
"$venv/bin/ansible-test" sanity --venv --python "$("$venv/bin/python" -c 'import sys;print("%d.%d" % sys.version_info[:2])')" \
  --color no "$@"
