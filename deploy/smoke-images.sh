#!/usr/bin/env bash
# Smoke test of the images deploy/build-images.sh makes, run the way the
# chart runs them (uid 65532, read-only root, no capabilities):
#
#   1. modcoord:dev prints its commands, `train --help`, `coordinator --help`
#      and `worker --help`, and loads OpenBLAS (a one-step train).
#   2. modcoord-etcd:dev serves /livez and /readyz on its metrics port.
#   3. modcoord-nats:dev runs the chart's own nats.conf (rendered by
#      `helm template`): password auth with the password passed as the
#      chart passes it (quoted, in an environment variable; an all-digit
#      one, the case the quoting exists for), a wrong password refused, and
#      two servers forming a route with credentials from NATS_ROUTES.
#
# Needs helm (HELM, PATH or $(go env GOPATH)/bin). Cleans up its containers
# and network on exit. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${IMAGE_TAG:-dev}"
start=$(date +%s)
run_id="mcsmoke-$$"
net="$run_id"
work=$(mktemp -d "${TMPDIR:-/tmp}/modcoord-smoke.XXXXXX")
cleanup() {
  local rc=$?
  docker ps -aq --filter "label=$run_id" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
  echo "smoke-images: $([ "$rc" = 0 ] && echo PASS || echo FAIL) in $(( $(date +%s) - start ))s" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "smoke-images: FAIL: $*" >&2; exit 1; }
wait_for() { # DESCRIPTION TIMEOUT COMMAND...
  local what=$1 deadline=$(( $(date +%s) + $2 )); shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 1
  done
}
helm="${HELM:-$(command -v helm || echo "$(go env GOPATH)/bin/helm")}"
[ -x "$helm" ] || die "helm not found (go install helm.sh/helm/v3/cmd/helm@v3.22.0)"

# The chart's container hardening.
hard=(--user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp:mode=1777 --label "$run_id")
docker network create "$net" >/dev/null

echo "== modcoord:$tag"
out=$(docker run --rm "${hard[@]}" "modcoord:$tag" 2>&1 || true)
for cmd in coordinator worker submit watch status cancel train; do
  [[ "$out" == *$'\n'"  $cmd "* ]] || die "modcoord lists no '$cmd' command: $out"
done
for cmd in train coordinator worker submit; do
  # --help prints on stdout and exits 0; capture first (grep -q would cut
  # the pipe under pipefail).
  help=$(docker run --rm "${hard[@]}" "modcoord:$tag" "$cmd" --help 2>&1) || die "modcoord $cmd --help exited $?: $help"
  [[ "$help" == *"modcoord $cmd"* && "$help" == *"Usage:"* ]] || die "modcoord $cmd --help: $help"
done
# One training step on the bundled text: the dynamic loader finds OpenBLAS
# and libgfortran in the image.
if ! docker run --rm "${hard[@]}" "modcoord:$tag" train --data /opt/modcoord/data/tinyshakespeare.txt --steps 1 > "$work/train.log" 2>&1; then
  cat "$work/train.log" >&2
  die "modcoord train --steps 1"
fi
tail -n 3 "$work/train.log"

echo "== modcoord-etcd:$tag"
docker run -d --name "$run_id-etcd" --network "$net" "${hard[@]}" --tmpfs /var/lib/etcd:uid=65532,mode=0700 \
  "modcoord-etcd:$tag" --name=e --data-dir=/var/lib/etcd/data --listen-client-urls=http://0.0.0.0:2379 \
  --advertise-client-urls=http://e:2379 --listen-metrics-urls=http://0.0.0.0:2381 >/dev/null
etcd_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$run_id-etcd")
wait_for "etcd /readyz" 60 curl -fsS --max-time 2 "http://$etcd_ip:2381/readyz"
curl -fsS --max-time 2 "http://$etcd_ip:2381/livez" >/dev/null || die "etcd /livez"

echo "== modcoord-nats:$tag with the chart's configuration"
# The clustered configuration (3 NATS servers in a StatefulSet).
"$helm" template smoke helm/modcoord --set nats.replicas=2 --show-only templates/nats.yaml |
  awk '/^  nats.conf: \|/ {on=1; next} on && /^    / {sub(/^    /, ""); print; next} on {exit}' > "$work/nats.conf"
grep -q 'routes: $NATS_ROUTES' "$work/nats.conf" || die "could not extract nats.conf from the chart:\n$(cat "$work/nats.conf")"
password=1234567890123456 # all digits: unquoted, the config parser would read a number
route_password=abcdef0123456789
start_nats() { # NAME ROUTES [EXTRA DOCKER ARGS]
  local name=$1 routes=$2; shift 2
  docker run -d --name "$run_id-$name" --hostname "$name" --network "$net" --network-alias "$name" "${hard[@]}" "$@" \
    -v "$work/nats.conf:/etc/nats/nats.conf:ro" \
    -e POD_NAME="$name" \
    -e NATS_PASSWORD="\"$password\"" \
    -e NATS_ROUTE_PASSWORD="\"$route_password\"" \
    -e NATS_ROUTES="$routes" \
    "modcoord-nats:$tag" --config /etc/nats/nats.conf >/dev/null
}
# StatefulSet topology: every server lists every server's route.
both="[\"nats-route://route:$route_password@nats-0:6222\", \"nats-route://route:$route_password@nats-1:6222\"]"
start_nats nats-0 "$both"
start_nats nats-1 "$both"
ip0=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$run_id-nats-0")
ip1=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$run_id-nats-1")
wait_for "nats-0 /healthz" 30 curl -fsS --max-time 2 "http://$ip0:8222/healthz"
wait_for "nats-1 /healthz" 30 curl -fsS --max-time 2 "http://$ip1:8222/healthz"
# peers IP: how many other servers IP has routes to. Not num_routes: with
# pool_size each peer counts several connections.
peers() { curl -fsS --max-time 2 "http://$1:8222/routez" | grep -o '"remote_name": "[^"]*"' | sort -u | wc -l; }
routes_up() { [ "$(peers "$1")" -ge 1 ]; }
wait_for "a route between nats-0 and nats-1" 30 routes_up "$ip0"
routes_up "$ip1" || die "nats-1 has no route"
# nats_connect IP USER PASS: the server's answer to CONNECT + PING.
nats_connect() {
  exec 3<>"/dev/tcp/$1/4222"
  read -r -t 5 _info <&3
  printf 'CONNECT {"verbose":false,"pedantic":false,"user":"%s","pass":"%s"}\r\nPING\r\n' "$2" "$3" >&3
  local reply=""
  read -r -t 5 reply <&3 || true
  exec 3<&-
  echo "$reply"
}
reply=$(nats_connect "$ip0" modcoord "$password")
[[ "$reply" == PONG* ]] || die "the right password was refused: $reply"
reply=$(nats_connect "$ip1" modcoord wrong-password)
[[ "$reply" == *"Authorization Violation"* ]] || die "a wrong password was not refused: $reply"
reply=$(nats_connect "$ip0" "" "")
[[ "$reply" == *"Authorization Violation"* ]] || die "no credentials were not refused: $reply"
echo "nats: auth and routes OK"

echo "== modcoord-nats:$tag, per-node topology: one seed name for all servers"
# As with the chart's headless Service, one DNS name resolves to every
# server (a shared network alias); each must skip its own address and
# still find the others.
seed="[\"nats-route://route:$route_password@nats-seed:6222\"]"
for n in node-a node-b node-c; do start_nats "$n" "$seed" --network-alias nats-seed; done
ips=()
for n in node-a node-b node-c; do
  ips+=("$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$run_id-$n")")
done
full_mesh() { [ "$(peers "$1")" -eq 2 ]; }
for ip in "${ips[@]}"; do
  wait_for "routes from $ip to the other two servers" 60 full_mesh "$ip"
done
echo "nats: per-node seed routes formed a full mesh"
