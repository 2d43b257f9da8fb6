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
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [[ -e "$f" ]] && cp --parents -P "$f" "$dest/"
done
site="$("$venv/bin/python" -c 'import ansible_collections, os; print([p for p in ansible_collections.__path__ if "site-packages" in p][0])')"
for dep in kubernetes/core amazon/aws community/aws community/crypto; do
  mkdir -p "$work/ansible_collections/$(dirname "$dep")"
  cp -r "$site/$dep" "$work/ansible_collections/$dep"
done

# ansible-test downloads a pip bootstrap script from a host these machines cannot reach; it runs a
# cached one when present, so put ours (tests/scripts/pip_bootstrap.py) where it looks.
ansible_test_dir="$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')"
pip_version="$(grep -oE "pip='[0-9.]+'" "$ansible_test_dir/_internal/python_requirements.py" | head -1 | cut -d"'" -f2)"
mkdir -p "$HOME/.ansible/test/cache"
cp "$repo/tests/scripts/pip_bootstrap.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"

cd "$dest"
git init -q && git add -A >/dev/null && git -c user.name=ci -c user.email=ci@invalid commit -qm sanity
pyver="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
"$venv/bin/ansible-test" sanity --venv --python "$pyver" --color no "$@"
