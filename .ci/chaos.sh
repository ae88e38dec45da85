#!/usr/bin/env bash
# The multi-host chaos suite (deploy/chaos): builds the container image if
# it changed, runs the suite against a Docker compose cluster, and always
# tears the cluster down (also on failure or interrupt). Safe to run again.
#
#   CHAOS_MODE   soak (default): the undisturbed run and the soak, one job
#                under a seeded random schedule of CHAOS_SOAK_FAULTS (50)
#                overlapping faults (deploy/chaos/soak_test.go), which covers
#                every one-of-each scenario's fault; scenarios: the
#                one-of-each runs (TestChaos); all: both
#   CHAOS_STEPS, CHAOS_FAULTS, CHAOS_SOAK_*, CHAOS_ARTIFACTS, CHAOS_KEEP:
#                see deploy/chaos/README.md
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"
start=$(date +%s)

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "chaos: needs Docker with compose (docker compose or docker-compose)" >&2
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "chaos: the Docker engine is not reachable" >&2; exit 1; }

teardown() {
  # CHAOS_SECRETS only has to be set for compose to read the file.
  CHAOS_SECRETS="${TMPDIR:-/tmp}" "${compose[@]}" -p "${CHAOS_PROJECT:-modcoord-chaos}" -f deploy/chaos/compose.yaml \
    down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
}
trap teardown EXIT
trap 'exit 130' INT TERM
teardown

echo "== chaos: image"
bash deploy/chaos/images.sh

CHAOS_MODE="${CHAOS_MODE:-soak}"
echo "== chaos: suite, mode $CHAOS_MODE ($(( $(date +%s) - start ))s)"
export CHAOS_ARTIFACTS="${CHAOS_ARTIFACTS:-${TMPDIR:-/tmp}/modcoord-chaos-$(date +%Y%m%d-%H%M%S)}"
case "$CHAOS_MODE" in
soak)
  run='^TestChaosSoak$'
  # The soak's job must outlast its schedule: 50 faults about 3 s apart,
  # each costing a few seconds of training, then 3 isolated worker kills
  # about 15 s apart.
  export CHAOS_STEPS="${CHAOS_STEPS:-7000}"
  ;;
scenarios) run='^TestChaos$' ;;
all) run='^TestChaos' ;;
*)
  echo "chaos: CHAOS_MODE=$CHAOS_MODE: want soak, scenarios or all" >&2
  exit 2
  ;;
esac
CHAOS_SKIP_BUILD=1 nice -n 10 go test -tags chaos -count=1 -v -timeout 60m -run "$run" ./deploy/chaos/
echo "== chaos: done in $(( $(date +%s) - start ))s; logs and report in $CHAOS_ARTIFACTS"
