#!/usr/bin/env bash
# Installs helm/modcoord for real into a throwaway Kubernetes control plane
# on loopback and checks that it deploys, upgrades and uninstalls cleanly.
#
# The control plane: kube-apiserver and kube-controller-manager v1.34.2
# built from the Go module proxy (.ci/kube-build.sh, cached outside the
# repository), an embedded one-member etcd (deploy/kubetest/etcd), token
# auth, a CA and service-account keys from openssl. No kubelet and no
# scheduler: the controller manager creates the Pods, which stay Pending.
# That is enough for every object to pass the real API server's validation,
# defaulting and admission, including Pod Security "restricted", which the
# test namespaces enforce, so a Pod the StatefulSet controller creates is
# proof that the chart's securityContext passes.
#
# Releases (one namespace each):
#   modcoord  default values (generated TLS Secrets must survive an upgrade;
#             deleting <fullname>-tls and upgrading reissues it from the kept CA)
#   gpu       helm/modcoord/ci/nondefault-values.yaml (existing Secrets, PVCs,
#             ServiceMonitor and PrometheusRule CRDs created first)
#   pn        helm/modcoord/ci/pernode-values.yaml (NATS DaemonSet: a Node
#             object is registered so the DaemonSet controller makes a Pod)
# Each: install, helm status deployed, StatefulSets/DaemonSet and their Pods
# exist, upgrade (replicas change; generated secrets must survive), helm
# uninstall, and everything it owned is gone.
#
#   MODCOORD_CACHE  cache root for the kube binaries (default /var/cache/modcoord)
#   HELM            helm binary (default: PATH, then $(go env GOPATH)/bin/helm,
#                   installed with go install if missing)
#   KUBETEST_KEEP=1 keep the work directory (logs, kubeconfig) after the run
#   MODCOORD_CHART  chart directory (default helm/modcoord; the values files
#                   are still read from helm/modcoord/ci)
#
# Idempotent: fresh work directory and free ports every run; every process
# started here is stopped on exit (trap), and every wait has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export GOFLAGS="${GOFLAGS:--mod=mod}"
chart="${MODCOORD_CHART:-helm/modcoord}"
start=$(date +%s)
phase_start=$start
phase() {
  local now; now=$(date +%s)
  echo "== kube-install-test: $* (total $(( now - start ))s, previous phase $(( now - phase_start ))s)"
  phase_start=$now
}
die() { echo "kube-install-test: FAIL: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/modcoord-kubetest.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Stop in reverse start order: controller manager, API server, etcd.
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    for f in "$work"/logs/*.log; do
      [ -f "$f" ] || continue
      echo "---- last lines of $f" >&2
      tail -n 25 "$f" >&2
    done
  fi
  if [ "${KUBETEST_KEEP:-0}" = 1 ]; then
    echo "kube-install-test: kept $work" >&2
  else
    rm -rf "$work"
  fi
  echo "kube-install-test: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (rc $rc)") in $(( $(date +%s) - start ))s" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/logs" "$work/pki" "$work/etcd"

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls COMMAND once a second.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then die "timed out after ${timeout}s waiting for $what"; fi
    sleep 1
  done
}

# free_port: a loopback TCP port nobody listens on.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}

phase "tools"
helm="${HELM:-}"
if [ -z "$helm" ]; then
  helm=$(command -v helm || true)
  [ -n "$helm" ] || helm="$(go env GOPATH)/bin/helm"
fi
if [ ! -x "$helm" ]; then
  echo "installing helm v3.22.0 with go install" >&2
  GOFLAGS= nice -n 19 go install helm.sh/helm/v3/cmd/helm@v3.22.0
  helm="$(go env GOPATH)/bin/helm"
fi
"$helm" version --short
kbin=$(KUBE_BINS="kube-apiserver kube-controller-manager kubectl" bash .ci/kube-build.sh | tail -n 1)
kubectl_bin="$kbin/kubectl"
[ -x "$kubectl_bin" ] || die "kubectl missing in $kbin"
etcd_bin="$work/etcd-kubetest"
nice -n 19 go build -o "$etcd_bin" ./deploy/kubetest/etcd

phase "certificates and tokens"
(
  cd "$work/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj "/CN=modcoord-kubetest-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 1 -extfile apiserver.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
admin_token=$(openssl rand -hex 24)
kcm_token=$(openssl rand -hex 24)
# token,user,uid,"groups"
printf '%s,admin,admin,"system:masters"\n%s,system:kube-controller-manager,kcm,"system:masters"\n' "$admin_token" "$kcm_token" > "$work/pki/tokens.csv"

etcd_client=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
echo "ports: etcd $etcd_client/$etcd_peer, kube-apiserver $api_port, kube-controller-manager $kcm_port"

kubeconfig() { # kubeconfig USER TOKEN FILE
  cat > "$3" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kubetest
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $work/pki/ca.crt
users:
  - name: $1
    user:
      token: $2
contexts:
  - name: kubetest
    context: {cluster: kubetest, user: $1}
current-context: kubetest
EOF
  chmod 600 "$3"
}
kubeconfig admin "$admin_token" "$work/admin.kubeconfig"
kubeconfig kcm "$kcm_token" "$work/kcm.kubeconfig"
export KUBECONFIG="$work/admin.kubeconfig"
kubectl() { "$kubectl_bin" --request-timeout=20s "$@"; }
helm() { "$helm" --kube-context kubetest "$@"; }

phase "etcd"
"$etcd_bin" --data-dir "$work/etcd" --client-url "http://127.0.0.1:$etcd_client" \
  --peer-url "http://127.0.0.1:$etcd_peer" --ready-file "$work/etcd.ready" > "$work/logs/etcd.log" 2>&1 &
pids+=($!)
wait_for "etcd" 60 test -f "$work/etcd.ready"

phase "kube-apiserver"
"$kbin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_client" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --tls-cert-file="$work/pki/apiserver.crt" --tls-private-key-file="$work/pki/apiserver.key" \
  --client-ca-file="$work/pki/ca.crt" \
  --token-auth-file="$work/pki/tokens.csv" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$work/pki/sa.pub" \
  --service-account-signing-key-file="$work/pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,PodSecurity \
  --profiling=false \
  > "$work/logs/kube-apiserver.log" 2>&1 &
pids+=($!)
api_ready() { curl -fsS --max-time 5 --cacert "$work/pki/ca.crt" -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$api_port/readyz" | grep -q '^ok$'; }
wait_for "kube-apiserver /readyz" 180 api_ready
kubectl version || true

phase "kube-controller-manager"
"$kbin/kube-controller-manager" \
  --kubeconfig="$work/kcm.kubeconfig" \
  --authentication-kubeconfig="$work/kcm.kubeconfig" \
  --authorization-kubeconfig="$work/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$kcm_port" \
  --leader-elect=false \
  --root-ca-file="$work/pki/ca.crt" \
  --service-account-private-key-file="$work/pki/sa.key" \
  --use-service-account-credentials=false \
  --profiling=false \
  > "$work/logs/kube-controller-manager.log" 2>&1 &
pids+=($!)
kcm_ready() { curl -fsS --max-time 5 -k "https://127.0.0.1:$kcm_port/healthz" | grep -q '^ok$'; }
wait_for "kube-controller-manager /healthz" 120 kcm_ready

phase "cluster fixtures"
# A Node object (no kubelet behind it) so the DaemonSet controller creates a Pod.
kubectl apply -f - <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kubetest-node-0
  labels:
    kubernetes.io/hostname: kubetest-node-0
    nvidia.com/gpu.present: "true"
EOF
# The ServiceMonitor and PrometheusRule CRDs, so the non-default release's
# are real API objects. Minimal schemas: the chart test checks the fields.
kubectl apply -f deploy/kubetest/servicemonitor-crd.yaml -f deploy/kubetest/prometheusrule-crd.yaml
wait_for "ServiceMonitor CRD established" 60 kubectl wait --for=condition=Established --timeout=5s crd/servicemonitors.monitoring.coreos.com
wait_for "PrometheusRule CRD established" 60 kubectl wait --for=condition=Established --timeout=5s crd/prometheusrules.monitoring.coreos.com
for ns in mc-default mc-gpu mc-pernode; do
  kubectl create namespace "$ns"
  # Pods that violate the "restricted" Pod Security Standard are rejected.
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
  wait_for "default ServiceAccount in $ns" 60 kubectl -n "$ns" get serviceaccount default
done
# What nondefault-values.yaml expects to exist already.
# tls.existingSecret: the keys the pods project (the pods never start here,
# so the contents need not be real certificates).
tls_args=(--from-literal=ca.crt=not-a-real-ca)
for role in coordinator worker user etcd nats; do
  tls_args+=(--from-literal="$role-mc-gpu.crt=not-a-real-cert" --from-literal="$role-mc-gpu.key=not-a-real-key")
done
kubectl -n mc-gpu create secret generic modcoord-tls "${tls_args[@]}"
for pvc in shared-checkpoints training-corpus; do
  kubectl -n mc-gpu apply -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $pvc}
spec:
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 1Gi}}
EOF
done

# check_release NS RELEASE: helm says deployed, and every StatefulSet and
# DaemonSet of the release has its Pods (created by the controller manager).
pods_of() { kubectl -n "$1" get pods -l "$2" -o name | wc -l; }
expect_pods() { # NS SELECTOR WANT
  [ "$(pods_of "$1" "$2")" -eq "$3" ]
}
# pod_or_failed_create NS POD: the pod exists, or a controller failed to
# create a pod (e.g. Pod Security admission refused it), which ends the wait.
pod_or_failed_create() {
  kubectl -n "$1" get pod "$2" && return 0
  kubectl -n "$1" get events --field-selector reason=FailedCreate -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' > "$work/failed-create"
  [ -s "$work/failed-create" ]
}
failed_create() {
  if [ -s "$work/failed-create" ]; then
    cat "$work/failed-create" >&2
    die "$1: the controllers failed to create pods (above)"
  fi
}
# helm_run ARGS...: helm, failing on Pod Security warnings, which mean the
# controllers' pod creation will be refused.
helm_run() {
  helm "$@" 2>&1 | tee "$work/helm.out"
  if grep -q "violate PodSecurity" "$work/helm.out"; then die "helm $1: the pod templates violate the restricted Pod Security Standard"; fi
}
check_release() {
  local ns=$1 rel=$2 revision=$3
  local st
  st=$(helm status "$rel" -n "$ns" -o json)
  echo "$st" | grep -q '"status":"deployed"' || die "$rel: helm status is not deployed: $st"
  echo "$st" | grep -q "\"version\":$revision" || die "$rel: want revision $revision: $st"
  local n=0
  while read -r name replicas; do
    [ -n "$name" ] || continue
    n=$((n + 1))
    echo "  statefulset $name: $replicas replicas"
    for (( i=0; i<replicas; i++ )); do
      wait_for "pod $ns/$name-$i" 90 pod_or_failed_create "$ns" "$name-$i"
      failed_create "$ns"
    done
    wait_for "exactly $replicas pods of $name" 90 expect_pods "$ns" "app.kubernetes.io/instance=$rel,app.kubernetes.io/component=$(kubectl -n "$ns" get statefulset "$name" -o jsonpath='{.spec.selector.matchLabels.app\.kubernetes\.io/component}')" "$replicas"
  done < <(kubectl -n "$ns" get statefulsets -l "app.kubernetes.io/instance=$rel" -o jsonpath='{range .items[*]}{.metadata.name} {.spec.replicas}{"\n"}{end}')
  [ "$n" -gt 0 ] || die "$rel: no StatefulSets"
  while read -r name; do
    [ -n "$name" ] || continue
    echo "  daemonset $name"
    wait_for "a pod of daemonset $name on the registered node" 90 expect_pods "$ns" "app.kubernetes.io/instance=$rel,app.kubernetes.io/component=nats" 1
  done < <(kubectl -n "$ns" get daemonsets -l "app.kubernetes.io/instance=$rel" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  # A Pod Security rejection shows up as a FailedCreate event, not as an error anywhere else.
  if kubectl -n "$ns" get events --field-selector reason=FailedCreate -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | grep .; then
    die "$rel: the controllers failed to create pods (above)"
  fi
  kubectl -n "$ns" get pods -o wide
}

secret_data() { kubectl -n "$1" get secret "$2" -o jsonpath='{.data}'; }

phase "install: default values"
helm_run install modcoord "$chart" -n mc-default --timeout 2m
check_release mc-default modcoord 1
if kubectl -n mc-default get secret modcoord-token >/dev/null 2>&1; then die "an API token Secret was created; the API is mutual TLS only"; fi
nats_before=$(secret_data mc-default modcoord-nats)
[ -n "$nats_before" ] || die "generated NATS route password Secret missing"
# The etcd pod runs the etcd-setup sidecar (etcd auth), with the etcd certificate.
setup=$(kubectl -n mc-default get pod modcoord-etcd-0 -o jsonpath='{.spec.containers[?(@.name=="etcd-setup")].args}')
grep -q -- '--wait' <<<"$setup" || die "etcd pod has no etcd-setup --wait sidecar: '$setup'"
tls_ca_before=$(secret_data mc-default modcoord-tls-ca)
tls_before=$(secret_data mc-default modcoord-tls)
[ -n "$tls_ca_before" ] && [ -n "$tls_before" ] || die "generated TLS Secrets missing"

phase "install: non-default values"
helm_run install gpu "$chart" -n mc-gpu -f helm/modcoord/ci/nondefault-values.yaml --timeout 2m
check_release mc-gpu gpu 1
kubectl -n mc-gpu get servicemonitor mc-gpu >/dev/null || die "ServiceMonitor not created"
alerts=$(kubectl -n mc-gpu get prometheusrule mc-gpu -o jsonpath='{.spec.groups[*].rules[*].alert}') || die "PrometheusRule not created"
[ "$(wc -w <<<"$alerts")" -eq 4 ] || die "PrometheusRule has alerts '$alerts', want 4"
kubectl -n mc-gpu get configmap mc-gpu-dashboard >/dev/null || die "dashboard ConfigMap not created"
gpus=$(kubectl -n mc-gpu get pod mc-gpu-worker-0 -o jsonpath='{.spec.containers[0].resources.limits.nvidia\.com/gpu}')
[ "$gpus" = 1 ] || die "worker pod nvidia.com/gpu limit is '$gpus', want 1"

phase "install: per-node NATS, 3 etcd members"
# With no kubelet the registered Node soon turns NotReady/unreachable and is
# tainted; let the NATS DaemonSet tolerate that here so its controller
# still creates (and, on upgrade, replaces) the Pod.
cat > "$work/pernode-test.yaml" <<'EOF'
nats:
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
    - {operator: Exists}
EOF
pernode=(-f helm/modcoord/ci/pernode-values.yaml -f "$work/pernode-test.yaml")
helm_run install pn "$chart" -n mc-pernode "${pernode[@]}" --timeout 2m
check_release mc-pernode pn 1

phase "upgrade"
helm_run upgrade modcoord "$chart" -n mc-default --set worker.replicas=3 --timeout 2m
check_release mc-default modcoord 2
[ "$(secret_data mc-default modcoord-nats)" = "$nats_before" ] || die "upgrade changed the generated NATS route password"
[ "$(secret_data mc-default modcoord-tls-ca)" = "$tls_ca_before" ] || die "upgrade changed the generated CA"
[ "$(secret_data mc-default modcoord-tls)" = "$tls_before" ] || die "upgrade changed the generated certificates"
# Deleting the certificates' Secret and upgrading reissues them from the kept CA.
kubectl -n mc-default delete secret modcoord-tls
helm_run upgrade modcoord "$chart" -n mc-default --set worker.replicas=3 --timeout 2m
check_release mc-default modcoord 3
[ "$(secret_data mc-default modcoord-tls-ca)" = "$tls_ca_before" ] || die "reissuing the certificates changed the CA"
tls_after=$(secret_data mc-default modcoord-tls)
[ -n "$tls_after" ] && [ "$tls_after" != "$tls_before" ] || die "deleting modcoord-tls and upgrading did not reissue the certificates"
[ "$(kubectl -n mc-default get secret modcoord-tls -o jsonpath='{.data.ca\.crt}')" = "$(kubectl -n mc-default get secret modcoord-tls-ca -o jsonpath='{.data.ca\.crt}')" ] \
  || die "reissued certificates do not carry the kept CA"
helm_run upgrade gpu "$chart" -n mc-gpu -f helm/modcoord/ci/nondefault-values.yaml --set worker.replicas=6 --timeout 2m
check_release mc-gpu gpu 2
helm_run upgrade pn "$chart" -n mc-pernode "${pernode[@]}" --set nats.config.maxPending=512MB --timeout 2m
check_release mc-pernode pn 2

phase "uninstall"
gone() { # NS RELEASE: nothing labelled with the release is left but kept PVCs
  local left
  left=$(kubectl -n "$1" get statefulsets,daemonsets,services,configmaps,secrets,pods,poddisruptionbudgets,serviceaccounts \
    -l "app.kubernetes.io/instance=$2" -o name)
  [ -z "$left" ]
}
for pair in mc-default:modcoord mc-gpu:gpu mc-pernode:pn; do
  ns=${pair%%:*} rel=${pair#*:}
  helm uninstall "$rel" -n "$ns" --timeout 2m
  if helm status "$rel" -n "$ns" >/dev/null 2>&1; then die "$rel still known to helm after uninstall"; fi
  # Pods go through the garbage collector (owner references).
  wait_for "$rel's objects to be deleted" 120 gone "$ns" "$rel"
done
# helm.sh/resource-policy: keep leaves the default release's checkpoint PVC.
kubectl -n mc-default get pvc modcoord-checkpoints >/dev/null || die "the checkpoint PVC should survive uninstall (keepOnUninstall)"
if kubectl -n mc-pernode get pvc pn-modcoord-checkpoints >/dev/null 2>&1; then
  die "pernode sets keepOnUninstall=false, yet its checkpoint PVC survived"
fi

phase "done"
