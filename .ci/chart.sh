#!/usr/bin/env bash
# Helm chart checks (fast, no cluster): helm lint --strict and helm template
# for the default values and every helm/modcoord/ci/*-values.yaml, then the
# Go chart test (helm/charttest: strict decoding into the Kubernetes API
# types, security, labels, selectors, secrets, schema). The real install
# into a throwaway API server is .ci/kube-install-test.sh.
#
#   HELM  helm binary (default: PATH, then $(go env GOPATH)/bin/helm; installed
#         there with `go install helm.sh/helm/v3/cmd/helm@v3.22.0` if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"
start=$(date +%s)
step() { echo "== chart: $* ($(( $(date +%s) - start ))s)"; }

step "helm"
helm="${HELM:-}"
if [ -z "$helm" ]; then
  helm=$(command -v helm || true)
  [ -n "$helm" ] || helm="$(go env GOPATH)/bin/helm"
fi
if [ ! -x "$helm" ]; then
  echo "installing helm v3.22.0 with go install (cached in $(go env GOPATH)/bin)"
  # GOFLAGS off: -mod=mod does not apply to `go install pkg@version`.
  GOFLAGS= nice -n 19 go install helm.sh/helm/v3/cmd/helm@v3.22.0
  helm="$(go env GOPATH)/bin/helm"
fi
"$helm" version --short

chart=helm/modcoord
values=("")
for f in "$chart"/ci/*-values.yaml; do values+=("$f"); done
for v in "${values[@]}"; do
  args=()
  [ -z "$v" ] || args=(-f "$v")
  step "helm lint --strict ${v:-(default values)}"
  "$helm" lint --strict "$chart" "${args[@]}"
  step "helm template ${v:-(default values)}"
  n=$("$helm" template modcoord "$chart" --namespace modcoord "${args[@]}" | grep -c '^kind:')
  echo "$n objects"
done

step "go test ./helm/charttest"
HELM="$helm" nice -n 19 go test -count=1 ./helm/charttest/
step "done"
