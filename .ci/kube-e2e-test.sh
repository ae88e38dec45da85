#!/usr/bin/env bash
# End-to-end test of helm/modcoord on a real single-node Kubernetes cluster
# (.ci/kube-cluster.sh: kubelet, containerd, CNI, CoreDNS, all built or
# installed here; nothing pulled). Pods really run:
#
#   1. cluster up; deploy/build-images.sh; images imported into containerd
#   2. helm install (deploy/kubetest/e2e-values.yaml: defaults sized for two
#      cores); every pod Ready within $READY_TIMEOUT s
#   3. job "plain": submitted with `modcoord submit` (mutual TLS, a user
#      certificate from the chart's Secret) through the coordinators'
#      ClusterIP Service (kube-proxy), completes at exactly $STEPS steps with
#      a validation loss after the last step
#   4. job "worker-kill": a worker pod deleted mid-job; the next generation
#      resumes from the last committed checkpoint; completes at $STEPS; its
#      final parameters' sha256 equal job plain's (same N = 2)
#   5. job "leader-kill": the raft leader's pod deleted mid-job; another
#      coordinator leads; the job completes at $STEPS, parameters equal too
#   6. job "upgrade": helm upgrade worker.replicas 2 -> 3 mid-job; the job
#      re-forms with 3 workers and completes at $STEPS
#   7. helm uninstall: no pods left
#   8. cluster down (also on failure, keeping the logs)
#
#   KUBE_E2E_STEPS=N        steps per job (default 5000; about 100 steps/s here)
#   KUBE_E2E_READY_TIMEOUT  seconds for every pod to be Ready (default 300)
#   KUBE_E2E_KEEP=1         leave the cluster up at the end (tear down with
#                           bash .ci/kube-cluster.sh down)
#   MODCOORD_CACHE, MODCOORD_KUBE_DIR   as in .ci/kube-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export GOFLAGS="${GOFLAGS:--mod=mod}"
STEPS=${KUBE_E2E_STEPS:-5000}
READY_TIMEOUT=${KUBE_E2E_READY_TIMEOUT:-300}
JOB_TIMEOUT=${KUBE_E2E_JOB_TIMEOUT:-600}
ns=mc-e2e
rel=modcoord
start=$(date +%s)
phase_start=$start
declare -a timings=()
phase() {
  local now; now=$(date +%s)
  [ -n "${phase_name:-}" ] && timings+=("$(printf '%-44s %5ss' "$phase_name" $(( now - phase_start )))")
  echo "== kube-e2e: $* (total $(( now - start ))s, previous step $(( now - phase_start ))s)"
  phase_start=$now
  phase_name=$*
}
die() { echo "kube-e2e: FAIL: $*" >&2; exit 1; }
wait_for() { # DESCRIPTION TIMEOUT COMMAND...
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what"
    sleep 1
  done
}
work=$(mktemp -d "${TMPDIR:-/tmp}/modcoord-kube-e2e.XXXXXX")

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" != 0 ] && [ -n "${KUBECTL:-}" ]; then
    echo "---- pods, events (failure)" >&2
    "$KUBECTL" get pods -A -o wide >&2 2>&1 || true
    "$KUBECTL" -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
    for p in $("$KUBECTL" -n "$ns" get pods -o name 2>/dev/null); do
      echo "---- $p" >&2; "$KUBECTL" -n "$ns" logs "$p" --tail=15 >&2 2>&1 || true
    done
  fi
  if [ "${KUBE_E2E_KEEP:-0}" = 1 ]; then
    echo "kube-e2e: cluster left up (KUBECONFIG=${KUBECONFIG:-}); stop it with: bash .ci/kube-cluster.sh down" >&2
  else
    phase_name=""
    phase "cluster down"
    if [ "$rc" != 0 ]; then bash .ci/kube-cluster.sh down --keep-logs || true; else bash .ci/kube-cluster.sh down || true; fi
    phase "end"
  fi
  rm -rf "$work"
  printf '%s\n' "${timings[@]}"
  echo "kube-e2e: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (rc $rc)") in $(( $(date +%s) - start ))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase "cluster up"
env_file=$(bash .ci/kube-cluster.sh up | tail -n 1)
# shellcheck disable=SC1090
source "$env_file"
kubectl() { "$KUBECTL" --request-timeout=20s "$@"; }

phase "images: build, import into containerd"
bash deploy/build-images.sh
bash .ci/kube-cluster.sh load modcoord:dev modcoord-nats:dev modcoord-etcd:dev

phase "tools: helm, modcoord, jobplan"
helm=$(command -v helm || echo "$(go env GOPATH)/bin/helm")
if [ ! -x "$helm" ]; then
  GOFLAGS= nice -n 19 go install helm.sh/helm/v3/cmd/helm@v3.22.0
  helm="$(go env GOPATH)/bin/helm"
fi
helm() { "$helm" "$@"; }
modcoord_bin="${MODCOORD_CACHE:-/var/cache/modcoord}/images/bin/modcoord"
[ -x "$modcoord_bin" ] || die "$modcoord_bin missing (deploy/build-images.sh builds it)"
nice -n 19 go build -o "$work/jobplan" ./deploy/kubetest/jobplan

phase "helm install; every pod Ready within ${READY_TIMEOUT}s"
kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
values=(-f deploy/kubetest/e2e-values.yaml)
helm install "$rel" helm/modcoord -n "$ns" "${values[@]}" --timeout 2m
all_ready() { # every pod of the release exists per the StatefulSets' replicas and is Ready
  local want=0 n
  for n in $(kubectl -n "$ns" get statefulsets -l "app.kubernetes.io/instance=$rel" -o jsonpath='{.items[*].spec.replicas}'); do want=$((want + n)); done
  local ready
  ready=$(kubectl -n "$ns" get pods -l "app.kubernetes.io/instance=$rel" -o json |
    jq '[.items[] | select(.metadata.deletionTimestamp == null) | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length')
  [ "$want" -gt 0 ] && [ "$ready" = "$want" ]
}
t_install=$(date +%s)
wait_for "every pod of $rel Ready" "$READY_TIMEOUT" all_ready
echo "all $(kubectl -n "$ns" get pods -o name | wc -l) pods Ready $(( $(date +%s) - t_install ))s after helm install"
kubectl -n "$ns" get pods -o wide

# The API is mutual TLS: a user certificate from the chart's generated
# Secret (as NOTES.txt tells a user), and the Service's ClusterIP checked
# against the Service's DNS name, which the coordinators' certificate holds.
mkdir -m 700 "$work/tls"
for f in ca.crt "user-$rel.crt" "user-$rel.key"; do
  kubectl -n "$ns" get secret "$rel-tls" -o "go-template={{index .data \"$f\"}}" | base64 -d > "$work/tls/$f"
done
chmod 600 "$work/tls/user-$rel.key"
api_ip=$(kubectl -n "$ns" get service "$rel" -o jsonpath='{.spec.clusterIP}')
export MODCOORD_COORDINATOR="https://$api_ip:7070" MODCOORD_TLS_DIR="$work/tls" MODCOORD_TLS_SERVER_NAME="$rel.$ns.svc" MODCOORD_CONNECT_TIMEOUT=5s
mc() { "$modcoord_bin" "$@"; }
wait_for "the API through the Service $api_ip:7070" 120 mc status

# submit NAME MIN MAX: prints the job id; checks that the budget buys
# exactly $STEPS. Jobs compared bit for bit run at a fixed N (MIN = MAX):
# resume is bit-identical at the same worker count, not across counts.
submit() {
  cat > "$work/$1.spec" <<EOF
name: $1
data: tinyshakespeare.txt
model: {d_model: 32, layers: 2, heads: 2, seq_len: 32, capacity: 0.25}
batch: 12
min_workers: $2
max_workers: $3
checkpoint_every: 100
eval_every: 1000
keep_checkpoints: 3
seed: 7
EOF
  "$work/jobplan" -steps "$STEPS" < "$work/$1.spec" > "$work/$1.yaml"
  mc submit --json "$work/$1.yaml" > "$work/$1.submit"
  [ "$(jq -r .steps "$work/$1.submit")" = "$STEPS" ] || die "job $1 buys $(jq -r .steps "$work/$1.submit") steps, want $STEPS"
  jq -r .id "$work/$1.submit"
}
job() { mc status "$1" --json > "$work/status.json" && jq -r "$2" "$work/status.json"; }
progressed() { # JOB: steps done >= STEPS/4 and a checkpoint committed
  local sd ck
  sd=$(job "$1" .ledger.steps_done) ck=$(job "$1" '.checkpoint.step // 0')
  [ "$sd" -ge $(( STEPS / 4 )) ] && [ "$ck" -gt 0 ]
}
# complete JOB: waits for the end; completed, at exactly $STEPS steps, with a
# final checkpoint at $STEPS.
complete() {
  local t0; t0=$(date +%s)
  ended() { case "$(job "$1" .status)" in completed|failed|canceled) return 0 ;; *) return 1 ;; esac; }
  wait_for "job $1 to end" "$JOB_TIMEOUT" ended "$1"
  mc status "$1" --json > "$work/final.json"
  local st sd total ck
  st=$(jq -r .status "$work/final.json"); sd=$(jq -r .ledger.steps_done "$work/final.json")
  total=$(jq -r .ledger.total_steps "$work/final.json"); ck=$(jq -r '.checkpoint.step // 0' "$work/final.json")
  echo "job $1: $st, steps $sd/$total, final checkpoint at $ck, generation $(jq -r .generation "$work/final.json") (waited $(( $(date +%s) - t0 ))s)"
  [ "$st" = completed ] || die "job $1 ended $st: $(jq -r .reason "$work/final.json")"
  [ "$sd" = "$STEPS" ] && [ "$total" = "$STEPS" ] || die "job $1: steps $sd of $total, want $STEPS"
  [ "$ck" = "$STEPS" ] || die "job $1: final checkpoint at $ck, want $STEPS"
  local vs vl
  vs=$(jq -r '.val.step // 0' "$work/final.json") vl=$(jq -r '.val.loss // "none"' "$work/final.json")
  echo "job $1: validation loss $vl after step $vs"
  [ "$vs" = "$STEPS" ] || die "job $1: last validation loss after step $vs, want one after the last step ($STEPS)"
}
# fingerprint: the final checkpoint's shards (rank, range, sha256 of the
# parameters and optimizer state) from the last complete's status.
fingerprint() { jq -r '[.checkpoint.shards[] | "\(.rank) [\(.lo),\(.hi)) \(.data_sha256)"] | join("; ")' "$work/final.json"; }
# resumed_report JOB T_FAULT STEP_AT_FAULT: prints how long the job took
# to run again in a new generation, and the steps it redid.
resumed_report() {
  local s; s=$(job "$1" .start_step)
  echo "resumed $(( $(date +%s) - $2 ))s after the pod deletion, from step $s; steps lost (done before the fault, redone after): $(( $3 > s ? $3 - s : 0 ))"
}
still_running() { # JOB: the fault must land mid-job
  [ "$(job "$1" .status)" = running ] || die "job $1 is $(job "$1" .status) before the fault: raise KUBE_E2E_STEPS"
}

phase "job plain: $STEPS steps"
id=$(submit plain 2 2)
echo "submitted $id"
complete "$id"
baseline=$(fingerprint)
echo "undisturbed final parameters: $baseline"

phase "job worker-kill: delete a worker pod mid-job"
id=$(submit worker-kill 2 2)
wait_for "job worker-kill to progress" "$JOB_TIMEOUT" progressed "$id"
still_running "$id"
gen=$(job "$id" .generation) ck=$(job "$id" .checkpoint.step)
victim=$(job "$id" '.members[0]')
echo "generation $gen, last committed checkpoint at step $ck, steps done $(job "$id" .ledger.steps_done); deleting pod $victim"
sd_fault=$(job "$id" .ledger.steps_done)
kubectl -n "$ns" delete pod "$victim" --wait=false
t_kill=$(date +%s)
new_gen() { [ "$(job "$1" .generation)" -gt "$2" ] && [ "$(job "$1" .status)" = running ]; }
wait_for "a new generation of job worker-kill" 120 new_gen "$id" "$gen"
# A generation resumes from the workers' memory (resume_memory) when the
# survivors hold every range, else from the last committed checkpoint.
s=$(job "$id" .start_step) rf=$(job "$id" '.resume_from.step // 0') rm=$(job "$id" '.resume_memory.step // 0')
echo "generation $(job "$id" .generation) resumed from step $s (checkpoint $rf, memory $rm) with $(job "$id" '.members | join(",")')"
[ "$s" -ge "$ck" ] || die "resumed from step $s, older than the last commit ($ck) before the fault"
[ "$s" = "$rf" ] || [ "$s" = "$rm" ] || die "start step $s is neither the checkpoint ($rf) nor the memory step ($rm) it resumed from"
resumed_report "$id" "$t_kill" "$sd_fault"
complete "$id"
got=$(fingerprint)
[ "$got" = "$baseline" ] || die "job worker-kill's final parameters differ from the undisturbed run's at the same N:
  undisturbed: $baseline
  worker-kill: $got"
echo "final parameters identical to the undisturbed run's (sha256 of every shard)"
wait_for "pod $victim back and every pod Ready" "$READY_TIMEOUT" all_ready

phase "job leader-kill: delete the raft leader's pod mid-job"
leader_of() { # prints the leader's id as a coordinator that says it leads reports it
  local ip
  for ip in $(kubectl -n "$ns" get pods -l "app.kubernetes.io/instance=$rel,app.kubernetes.io/component=coordinator" -o jsonpath='{.items[*].status.podIP}'); do
    curl -fsS --max-time 2 "http://$ip:9090/readyz" 2>/dev/null | jq -r 'select(.is_leader == true) | .leader' 2>/dev/null
  done | head -n 1
}
id=$(submit leader-kill 2 2)
wait_for "job leader-kill to progress" "$JOB_TIMEOUT" progressed "$id"
still_running "$id"
old=$(leader_of)
[ -n "$old" ] || die "no coordinator says it leads"
echo "leader $old; steps done $(job "$id" .ledger.steps_done); deleting its pod"
kubectl -n "$ns" delete pod "$old" --wait=false
t_kill=$(date +%s)
another_leads() { local l; l=$(leader_of); [ -n "$l" ] && [ "$l" != "$old" ]; }
wait_for "another coordinator to lead" 60 another_leads
echo "new leader $(leader_of) after $(( $(date +%s) - t_kill ))s"
complete "$id"
got=$(fingerprint)
[ "$got" = "$baseline" ] || die "job leader-kill's final parameters differ from the undisturbed run's:
  undisturbed: $baseline
  leader-kill: $got"
echo "final parameters identical to the undisturbed run's"
wait_for "pod $old back and every pod Ready" "$READY_TIMEOUT" all_ready

phase "job upgrade: helm upgrade worker.replicas 2 -> 3 mid-job"
id=$(submit upgrade 2 3)
wait_for "job upgrade to progress" "$JOB_TIMEOUT" progressed "$id"
still_running "$id"
gen=$(job "$id" .generation)
helm upgrade "$rel" helm/modcoord -n "$ns" "${values[@]}" --set worker.replicas=3 --timeout 2m
three() { [ "$(job "$1" '.members | length')" = 3 ] || [ "$(job "$1" .status)" = completed ]; }
wait_for "job upgrade to re-form with 3 workers" 180 three "$id"
echo "generation $(job "$id" .generation) with $(job "$id" '.members | join(",")') from step $(job "$id" .start_step)"
complete "$id"
[ "$(jq -r '.members | length' "$work/final.json")" = 3 ] || die "job upgrade ended with $(jq -r '.members | length' "$work/final.json") workers, want 3"
wait_for "every pod Ready after the upgrade" "$READY_TIMEOUT" all_ready

phase "helm uninstall: no pods left"
helm uninstall "$rel" -n "$ns" --timeout 2m
no_pods() { [ -z "$(kubectl -n "$ns" get pods -o name)" ]; }
wait_for "every pod of $ns to be gone" 120 no_pods
phase "done"
