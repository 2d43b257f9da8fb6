#!/usr/bin/env bash
# Install the Debian packages bindep.txt lists for tests (redis-server, postgresql, ...).
# Only what is missing; never starts the services (tests run their own server processes).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v dpkg-query >/dev/null || { echo "not a Debian/Ubuntu machine: install the [test] packages of bindep.txt by hand" >&2; exit 0; }
missing=()
while read -r name rest; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" || missing+=("$name")
done < <(grep -v '^\s*#' bindep.txt | grep -E 'platform:dpkg')
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
# keep package scripts from starting services in this sandboxed machine
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
