#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, and (for the
# single-node cluster of .ci/kube-cluster.sh) kubelet, kube-scheduler and
# kube-proxy v1.34.2 from the Go module
# proxy alone (recipe: DESIGN.md, "A real Kubernetes API server runs here") into
# a cache directory OUTSIDE the repository, and reuses them when present.
#
#   MODCOORD_CACHE   cache root (default /var/cache/modcoord)
#   KUBE_BINS        which binaries (default: all seven; .ci/kube-install-test.sh
#                    needs only kube-apiserver kube-controller-manager kubectl)
#
# The seventh, coredns (COREDNS_VERSION, the cluster DNS of
# .ci/kube-cluster.sh), is built in a module of its own (coredns-src) with
# only the plugins that cluster uses, so its dependencies never mix with
# Kubernetes'.
#
# Prints the directory holding the binaries on its last line of stdout.
# Idempotent: a second run with the binaries present does nothing.
set -euo pipefail

KUBE_VERSION=v1.34.2
STAGING_VERSION=v0.34.2
COREDNS_VERSION=v1.14.7
cache="${MODCOORD_CACHE:-/var/cache/modcoord}/kube-${KUBE_VERSION}"
read -r -a bins <<< "${KUBE_BINS:-kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy coredns}"

# A binary counts only with its stamp: built by this script with the
# version stamped in (an unstamped build reports v0.0.0-master, which
# kubectl and helm cannot parse).
stamp() { if [ "$1" = coredns ]; then echo "$COREDNS_VERSION"; else echo "$KUBE_VERSION"; fi; }
built() { [ -x "$cache/bin/$1" ] && [ "$(cat "$cache/bin/$1.version" 2>/dev/null)" = "$(stamp "$1")" ]; }
have_all() { for b in "${bins[@]}"; do built "$b" || return 1; done; }

if have_all; then
  echo "kube-build: reusing $cache/bin" >&2
  echo "$cache/bin"
  exit 0
fi

mkdir -p "$cache/src" "$cache/bin"
# Serialize concurrent builds (two CI jobs, or two engineers) on one cache.
exec 9>"$cache/.lock"
flock -w 3600 9 || { echo "kube-build: timed out waiting for $cache/.lock" >&2; exit 1; }
if have_all; then echo "$cache/bin"; exit 0; fi

start=$(date +%s)
cd "$cache/src"
# A throwaway module: k8s.io/kubernetes cannot be required without replacing
# each staging module (its go.mod says v0.0.0 and points at ./staging).
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller)
{
  echo "module kubebuild"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  echo
  for s in "${staging[@]}"; do echo "replace k8s.io/$s => k8s.io/$s ${STAGING_VERSION}"; done
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
# GOFLAGS from the caller (e.g. -mod=mod) must not leak into this module.
export GOFLAGS=-buildvcs=false
echo "kube-build: resolving modules in $cache/src" >&2
nice -n 19 go mod tidy >&2
# What hack/lib/version.sh stamps into a release build.
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
build_coredns() (
  mkdir -p "$cache/coredns-src"
  cd "$cache/coredns-src"
  printf 'module corednsbuild\n\ngo 1.24\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" > go.mod
  # CoreDNS's documented way to build with a chosen plugin set: its own
  # coremain, and dnsserver.Directives listing the plugins in order.
  cat > main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
  nice -n 19 go mod tidy >&2
  CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "-s -w" -o "$cache/bin/coredns.tmp" . >&2
)
for b in "${bins[@]}"; do
  built "$b" && continue
  if [ "$b" = coredns ]; then
    echo "kube-build: building coredns $COREDNS_VERSION" >&2
    t0=$(date +%s)
    build_coredns
    mv "$cache/bin/coredns.tmp" "$cache/bin/coredns"
    echo "$COREDNS_VERSION" > "$cache/bin/coredns.version"
    echo "kube-build: coredns built in $(( $(date +%s) - t0 ))s" >&2
    continue
  fi
  echo "kube-build: building $b (several minutes on 2 cores; a relink if only the stamp is missing)" >&2
  t0=$(date +%s)
  CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$cache/bin/$b.tmp" "k8s.io/kubernetes/cmd/$b" >&2
  mv "$cache/bin/$b.tmp" "$cache/bin/$b"
  echo "$KUBE_VERSION" > "$cache/bin/$b.version"
  echo "kube-build: $b built in $(( $(date +%s) - t0 ))s" >&2
done
echo "kube-build: done in $(( $(date +%s) - start ))s" >&2
echo "$cache/bin"
