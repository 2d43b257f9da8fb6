#!/usr/bin/env bash
# Build the sandbox binaries once and cache them outside the checkout, keyed by version.
# Everything comes from the Go module proxy: wrapper modules pin the upstream versions.
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd 3.6 (go.etcd.io/etcd/server/v3 through a wrapper main)
#   kwok, MinIO, helm
#   crds: cert-manager, KEDA and Istio CustomResourceDefinitions (no build; installed on demand by tests)
# Usage: build.sh [component ...]   (default: all). A warm cache builds nothing.
set -euo pipefail

K8S_VERSION="${SANDBOX_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${SANDBOX_ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${SANDBOX_KWOK_VERSION:-v0.8.0}"
MINIO_VERSION="${SANDBOX_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
HELM_VERSION="${SANDBOX_HELM_VERSION:-v3.19.5}"
# CustomResourceDefinitions of optional cluster add-ons, taken from the upstream modules' sources.
# Installed only by the tests that exercise the "API served" paths (tests/sandbox/crds.py).
CERT_MANAGER_VERSION="${SANDBOX_CERT_MANAGER_VERSION:-v1.21.2}"
KEDA_VERSION="${SANDBOX_KEDA_VERSION:-v2.21.0}"
ISTIO_API_VERSION="${SANDBOX_ISTIO_API_VERSION:-v1.31.1}"

CACHE="${LLMOPS_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-sandbox}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

log() { printf '[sandbox-build] %s\n' "$*" >&2; }

have() { # have DIR BIN... : all present and executable
  local dir=$1; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

build_kubernetes() {
  local out="$CACHE/kubernetes-$K8S_VERSION"
  if have "$out" kube-apiserver kube-controller-manager kube-scheduler kubectl; then return 0; fi
  log "building kubernetes $K8S_VERSION (cold: ~15-25 min on 2 cores)"
  local work="$CACHE/src/kubernetes-$K8S_VERSION"
  mkdir -p "$work" "$out.tmp"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  (
    cd "$work"
    cat > go.mod <<MOD
module llmops.local/sandbox/kubernetes

go 1.24.0

require k8s.io/kubernetes $K8S_VERSION
MOD
    # k8s.io/kubernetes replaces its staging modules with local paths; a wrapper module has to
    # point each of them at the published module of the same release instead.
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > dl.json
    local gomod
    gomod=$(python3 -c 'import json,sys;print(json.load(open("dl.json"))["GoMod"])')
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u > staging.txt
    while read -r mod; do
      go mod edit -replace "$mod=$mod@$staging"
    done < staging.txt
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy -e >/dev/null 2>&1 || true
    go mod download
    local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=module-$K8S_VERSION"
    done
    go build -tags tools -ldflags "$ld" -o "$out.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION"
  if have "$out" etcd; then return 0; fi
  log "building etcd $ETCD_VERSION"
  local work="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$work" "$out.tmp"
  (
    cd "$work"
    cat > go.mod <<MOD
module llmops.local/sandbox/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    cat > main.go <<'GO'
// Command etcd runs etcd's server main from the published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    # etcd's own root module replaces its sibling modules; pin them to the same release.
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
      go mod edit -require "go.etcd.io/etcd/$m@$ETCD_VERSION"
    done
    go mod tidy
    go build -ldflags "-s -w" -o "$out.tmp/etcd" .
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
}

go_install() { # go_install NAME OUTDIR PKG@VERSION [LDFLAGS]
  local name=$1 out=$2 pkg=$3 ld=${4:-}
  if have "$out" "$name"; then return 0; fi
  log "building $pkg"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -ldflags "-s -w $ld" "$pkg"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_kwok() {
  go_install kwok "$CACHE/kwok-$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
}
build_minio() { go_install minio "$CACHE/minio-$MINIO_VERSION" "github.com/minio/minio@$MINIO_VERSION"; }
build_helm() {
  go_install helm "$CACHE/helm-$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

build_crds() { # upstream CRD manifests, no build: go mod download of each module's source
  local out="$CACHE/crds-cm$CERT_MANAGER_VERSION-keda$KEDA_VERSION-istio$ISTIO_API_VERSION"
  if [[ -f "$out/.complete" ]]; then return 0; fi
  log "fetching CRDs: cert-manager $CERT_MANAGER_VERSION, KEDA $KEDA_VERSION, Istio API $ISTIO_API_VERSION"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp/cert-manager" "$out.tmp/keda" "$out.tmp/istio"
  local dir
  dir=$(go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  cp "$dir"/deploy/crds/cert-manager.io_*.yaml "$out.tmp/cert-manager/"
  dir=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  cp "$dir"/config/crd/bases/keda.sh_*.yaml "$out.tmp/keda/"
  dir=$(go mod download -json "istio.io/api@$ISTIO_API_VERSION" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  cp "$dir/kubernetes/customresourcedefinitions.gen.yaml" "$out.tmp/istio/"
  chmod -R u+w "$out.tmp"
  touch "$out.tmp/.complete"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

paths() {
  cat <<P
KUBERNETES_BIN=$CACHE/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION
MINIO_BIN=$CACHE/minio-$MINIO_VERSION
HELM_BIN=$CACHE/helm-$HELM_VERSION
CRDS_DIR=$CACHE/crds-cm$CERT_MANAGER_VERSION-keda$KEDA_VERSION-istio$ISTIO_API_VERSION
P
}

main() {
  mkdir -p "$CACHE"
  if [[ "${1:-}" == "--paths" ]]; then paths; return; fi
  local comps=("$@")
  [[ ${#comps[@]} -gt 0 ]] || comps=(etcd kwok helm minio kubernetes crds)
  for c in "${comps[@]}"; do "build_$c"; done
  paths
}
main "$@"
