#!/usr/bin/env bash
# The DiLoCo bandwidth benchmark (docs/diloco.md); .ci/run does not run it.
#
# Four ranks, each a process in its own network namespace whose veth link
# to a bridge is shaped with tc tbf in both directions (RATE each way), and
# a NATS server on the bridge's host side. This kernel has no netem
# (CONFIG_NET_SCH_NETEM is off), so the latency is added in user space: each
# rank reaches NATS through `modcoord bench diloco-delay`, a proxy in its
# namespace that holds every byte DELAY in each direction (a rank's round
# trip to the server is 2·DELAY, rank to rank one way 2·DELAY). The same model, batch and step count
# (so the same FLOPs, up to DiLoCo's outer steps) run as: every-step sync,
# DiLoCo H=20, H=100, and H=100 with int8 outer gradients. Rank 0 of each
# run writes one JSON line per evaluation to OUT/<run>.jsonl;
# tools/diloco_plot.py turns them into the table and plot.
#
# Needs root (ip netns, tc). Usage: tools/diloco_bench.sh [OUT]
# Environment: STEPS (4000 in docs/diloco.md), RATE, DELAY, RUNS,
# OUTER_LR, OUTER_MOMENTUM, WARMUP (DiLoCo's defaults).
# RUNS is a list of every-step and diloco:H[:option...] where an option is
# int8, w=N (sync.warmup_steps), lr=X (outer lr) or mu=X (outer momentum),
# e.g. "every-step diloco:20:w=100:lr=0.8:mu=0.6 diloco:100:int8".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/diloco-bench}
RATE=${RATE:-100mbit}
DELAY=${DELAY:-10ms}
STEPS=${STEPS:-600}
WORLD=4
RUNS=${RUNS:-"every-step diloco:20 diloco:100 diloco:100:int8"}
# DiLoCo's outer optimizer (the defaults are the paper's: 0.7, 0.9) and
# every-step warm-up, unless a run names its own.
OUTER_LR=${OUTER_LR:-0.7}
OUTER_MOMENTUM=${OUTER_MOMENTUM:-0.9}
WARMUP=${WARMUP:-0}
mkdir -p "$OUT"
BIN=$(mktemp -d)/modcoord
GOFLAGS=-mod=mod go build -o "$BIN" ./cmd/modcoord
PW=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
BR=dlbr0
NATS_PID=
PROXY_PIDS=()

cleanup() {
	[ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null || true
	for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
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
	tc -n "$ns" qdisc add dev "dlp$r" root tbf rate "$RATE" burst 32kb latency 400ms
	tc qdisc add dev "dlv$r" root tbf rate "$RATE" burst 32kb latency 400ms
done
echo "links: $RATE each way (tbf), plus $DELAY each way (proxy), per rank"

"$BIN" bench diloco-nats --host 10.77.0.1 --port 4222 --password "$PW" &
NATS_PID=$!
PROXY_PIDS=()
for r in $(seq 0 $((WORLD - 1))); do
	ip netns exec "dlns$r" "$BIN" bench diloco-delay --listen 127.0.0.1:4222 --target 10.77.0.1:4222 --delay "$DELAY" &
	PROXY_PIDS+=($!)
done
sleep 1

for run in $RUNS; do
	IFS=: read -r mode inner opts <<<"$run"
	args=(--mode "$mode" --steps "$STEPS" --world "$WORLD" --nats nats://127.0.0.1:4222 --password "$PW")
	name=$mode
	if [ "$mode" = diloco ]; then
		compress=none lr=$OUTER_LR mu=$OUTER_MOMENTUM warmup=$WARMUP
		IFS=: read -ra optv <<<"$opts"
		for opt in "${optv[@]}"; do
			case $opt in
			int8) compress=int8 ;;
			w=*) warmup=${opt#w=} ;;
			lr=*) lr=${opt#lr=} ;;
			mu=*) mu=${opt#mu=} ;;
			*) echo "run $run: unknown option $opt" >&2; exit 2 ;;
			esac
		done
		args+=(--inner-steps "$inner" --eval-every "$inner" --compress "$compress" --outer-lr "$lr" --outer-momentum "$mu" --sync-warmup "$warmup")
		name=diloco-h$inner
		[ "$compress" = int8 ] && name+=-int8
		[ "$warmup" != 0 ] && name+=-w$warmup
		name+=-lr$lr-mu$mu
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
