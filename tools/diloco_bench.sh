#!/usr/bin/env bash
# The DiLoCo bandwidth benchmark (docs/diloco.md); .ci/run does not run it.
#
# Four ranks, each a process in its own network namespace whose veth link
# to a bridge is shaped with tc netem in both directions (RATE, DELAY each
# way: a worker's round trip to the NATS server is 2·DELAY), and a NATS
# server on the bridge's host side. The same model, batch and step count
# (so the same FLOPs, up to DiLoCo's outer steps) run as: every-step sync,
# DiLoCo H=20, H=100, and H=100 with int8 outer gradients. Rank 0 of each
# run writes one JSON line per evaluation to OUT/<run>.jsonl;
# tools/diloco_plot.py turns them into the table and plot.
#
# Needs root (ip netns, tc). Usage: tools/diloco_bench.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/diloco-bench}
RATE=${RATE:-100mbit}
DELAY=${DELAY:-10ms}
STEPS=${STEPS:-600}
WORLD=4
RUNS=${RUNS:-"every-step diloco:20 diloco:100 diloco:100:int8"}
mkdir -p "$OUT"
BIN=$(mktemp -d)/modcoord
GOFLAGS=-mod=mod go build -o "$BIN" ./cmd/modcoord
PW=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
BR=dlbr0
NATS_PID=

cleanup() {
	[ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null || true
	for r in $(seq 0 $((WORLD - 1))); do ip netns del "dlns$r" 2>/dev/null || true; done
	ip link del "$BR" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

ip link add "$BR" type bridge
ip addr add 10.77.0.1/24 dev "$BR"
ip link set "$BR" up
for r in $(seq 0 $((WORLD - 1))); do
	ns=dlns$r
	ip netns add "$ns"
	ip link add "dlv$r" type veth peer name "dlp$r"
	ip link set "dlp$r" netns "$ns"
	ip link set "dlv$r" master "$BR" up
	ip -n "$ns" addr add "10.77.0.$((10 + r))/24" dev "dlp$r"
	ip -n "$ns" link set "dlp$r" up
	ip -n "$ns" link set lo up
	# Upload (the rank's egress) and download (the bridge side's egress).
	tc -n "$ns" qdisc add dev "dlp$r" root netem delay "$DELAY" rate "$RATE" limit 100000
	tc qdisc add dev "dlv$r" root netem delay "$DELAY" rate "$RATE" limit 100000
done
echo "links: $RATE, $DELAY each way, per rank"
ip netns exec dlns0 ping -c 3 -q 10.77.0.1 | tail -1

"$BIN" bench diloco-nats --host 10.77.0.1 --port 4222 --password "$PW" &
NATS_PID=$!
sleep 1

for run in $RUNS; do
	IFS=: read -r mode inner compress <<<"$run"
	args=(--mode "$mode" --steps "$STEPS" --world "$WORLD" --nats nats://10.77.0.1:4222 --password "$PW")
	name=$mode
	if [ "$mode" = diloco ]; then
		args+=(--inner-steps "$inner" --eval-every "$inner" --compress "${compress:-none}")
		name=diloco-h$inner${compress:+-$compress}
	else
		args+=(--eval-every 20)
	fi
	echo "run $name: ${args[*]/$PW/***}"
	pids=()
	for r in $(seq 0 $((WORLD - 1))); do
		if [ "$r" = 0 ]; then dst="$OUT/$name.jsonl"; else dst=/dev/null; fi
		GOMAXPROCS=1 ip netns exec "dlns$r" nice -n 10 "$BIN" bench diloco-rank --rank "$r" "${args[@]}" >"$dst" 2>"$OUT/$name.rank$r.log" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	tail -1 "$OUT/$name.jsonl"
done
/usr/bin/python3 tools/diloco_plot.py "$OUT" docs/diloco-loss.png
