#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, built only from what it
# reaches (the Go module proxy and Debian): nothing is pulled from a registry.
#
#   bash .ci/kube-cluster.sh up            start everything; prints the env file
#   bash .ci/kube-cluster.sh load IMAGE..  docker save IMAGE | ctr import (k8s.io)
#   bash .ci/kube-cluster.sh down [--keep-logs]
#                                          stop everything, remove all state
#   bash .ci/kube-cluster.sh status
#
# What runs (all on the host, each a process of its own; pids in $state/pids):
#   etcd                 deploy/kubetest/etcd (embedded, loopback)
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#   kube-proxy (iptables)  v1.34.2, .ci/kube-build.sh (cached outside the repo)
#   coredns              built by .ci/kube-build.sh, on the host at the bridge
#                        address 10.244.0.1:53 (the kubelet's clusterDNS);
#                        answers cluster.local and nothing else (no forwarding)
#   containerd           Debian's (the one Docker uses), a SEPARATE instance:
#                        own config, socket, root and state under $state, CRI
#                        plugin, overlayfs snapshotter, runc with cgroupfs
#   CNI                  Debian's containernetworking-plugins (bridge,
#                        host-local, portmap, loopback): bridge mckube0,
#                        pods in 10.244.0.0/24; only pod<->pod and host<->pod
#                        traffic is forwarded, nothing leaves the machine
#   pv-provisioner       a shell loop here: every Pending PVC without a
#                        volume gets a hostPath PV under $state/volumes
#   pause image          modcoord-pause:dev, FROM scratch, the static
#                        deploy/kubetest/pause binary, built with docker and
#                        imported into containerd
#
# Every component authenticates with a token of group system:masters (a test
# cluster); the kubelet serves TLS with a cert from the cluster CA and lets
# the API server in with a client cert.
#
#   MODCOORD_KUBE_DIR  state directory (default /tmp/modcoord-kube)
#   MODCOORD_CACHE     cache root for the binaries (default /var/cache/modcoord)
#
# After `up`, `source $MODCOORD_KUBE_DIR/env` sets KUBECONFIG, KUBECTL,
# KUBE_BIN, CTR (ctr with the cluster's socket). One cluster per machine: the
# bridge name, the pod range and the DNS address are fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
state="${MODCOORD_KUBE_DIR:-/tmp/modcoord-kube}"
bridge=mckube0
pod_cidr=10.244.0.0/24
gw=10.244.0.1
svc_cidr=10.96.0.0/16
node=modcoord-node
cni_bin=/usr/lib/cni
start=$(date +%s)
phase_start=$start
phase() {
  local now; now=$(date +%s)
  echo "== kube-cluster: $* (total $(( now - start ))s, previous step $(( now - phase_start ))s)" >&2
  phase_start=$now
}
die() { echo "kube-cluster: FAIL: $*" >&2; exit 1; }
log() { echo "kube-cluster: $*" >&2; }

wait_for() { # DESCRIPTION TIMEOUT COMMAND...
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what"
    sleep 1
  done
}
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}
# spawn NAME CMD...: a daemon outliving this script, its own session, its
# log in $state/logs/NAME.log, its pid in $state/pids/NAME.
spawn() {
  local name=$1; shift
  setsid "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name"
}
alive() { [ -f "$state/pids/$1" ] && kill -0 "$(cat "$state/pids/$1")" 2>/dev/null; }
stop() { # NAME: SIGTERM, then SIGKILL after 15 s
  local f="$state/pids/$1" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# --------------------------------------------------------------------------
down() {
  local keep_logs=${1:-}
  [ -d "$state" ] || { log "nothing to stop ($state absent)"; teardown_host; return 0; }
  phase "down: deleting pods"
  if [ -f "$state/env" ] && alive kube-apiserver && alive kubelet; then
    # shellcheck disable=SC1091
    source "$state/env"
    # The kubelet tears every sandbox down properly (CNI DEL, mounts).
    "$KUBECTL" --request-timeout=10s delete statefulsets,deployments,daemonsets,jobs,replicasets --all -A --wait=false >/dev/null 2>&1 || true
    "$KUBECTL" --request-timeout=10s delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local deadline=$(( $(date +%s) + 60 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
      [ -z "$("$KUBECTL" --request-timeout=5s get pods -A -o name 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  phase "down: stopping processes"
  for c in pv-provisioner kube-proxy coredns kubelet kube-scheduler kube-controller-manager; do stop "$c"; done
  # Leftover containers (if the kubelet could not remove them): kill their tasks.
  local ctr_sock="$state/containerd/containerd.sock"
  if alive containerd; then
    for id in $(ctr -a "$ctr_sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$ctr_sock" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr -a "$ctr_sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$ctr_sock" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # Shims of this containerd (their command line names its socket).
  local pid
  for pid in $(ps -eo pid=,args= | grep -F -- "-address $ctr_sock" | grep -v grep | awk '{print $1}'); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop kube-apiserver
  stop etcd
  if [ -x "$state/bin/kube-proxy" ]; then
    "$state/bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  teardown_host
  # Mounts under the state dir (netns, shm, overlay, volumes).
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$state/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  if [ "$keep_logs" = --keep-logs ] && [ -d "$state/logs" ]; then
    local kept="${state}-logs.$(date +%Y%m%d-%H%M%S)"
    cp -r "$state/logs" "$kept"
    log "logs kept in $kept"
  fi
  rm -rf "$state"
  phase "down: done"
}

# Host-wide leftovers: the bridge, the forwarding rules, the pod cgroups.
teardown_host() {
  ip link del "$bridge" 2>/dev/null || true
  while iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null; do :; done
  while iptables -D FORWARD -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null; do :; done
  # What the kubelet itself adds (kube-proxy --cleanup removed kube-proxy's).
  local ipt t c
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for c in INPUT OUTPUT; do while "$ipt" -D "$c" -j KUBE-FIREWALL 2>/dev/null; do :; done; done
    for t in filter nat mangle; do
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$ipt" -t "$t" -F "$c" 2>/dev/null && "$ipt" -t "$t" -X "$c" 2>/dev/null || true
      done
    done
  done
  local h d
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h/kubepods" ] || continue
    # Depth first; a cgroup still holding a task stays (rmdir fails).
    find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  for d in /sys/fs/cgroup/*/; do [ -d "$d/kubepods" ] && log "warning: $d/kubepods is still there (tasks left?)"; done
  return 0
}

# --------------------------------------------------------------------------
up() {
  if [ -d "$state" ]; then
    log "$state exists: stopping the previous cluster first"
    down
  fi
  mkdir -p "$state"/{logs,pids,pki,bin,etcd,kubelet,pod-logs,volumes,cni/conf,cni/ipam,containerd}
  # On failure: stop what started, keep the logs, show their ends.
  trap 'rc=$?; if [ $rc != 0 ]; then for f in "$state"/logs/*.log; do echo "---- last lines of $f" >&2; tail -n 20 "$f" >&2; done; down --keep-logs; fi' EXIT

  phase "binaries"
  local kbin
  kbin=$(bash .ci/kube-build.sh | tail -n 1)
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns; do
    [ -x "$kbin/$b" ] || die "$b missing in $kbin"
    ln -sf "$kbin/$b" "$state/bin/$b"
  done
  (cd "$repo" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--mod=mod}" nice -n 19 go build -trimpath -o "$state/bin/etcd" ./deploy/kubetest/etcd)
  # Debian's packages (Docker's containerd and runc are usually there already).
  local pkgs=() t
  for t in containerd:containerd ctr:containerd runc:runc iptables:iptables conntrack:conntrack "$cni_bin/bridge:containernetworking-plugins"; do
    command -v "${t%%:*}" >/dev/null 2>&1 || [ -x "${t%%:*}" ] || pkgs+=("${t#*:}")
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]} from Debian"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  for p in bridge host-local loopback portmap; do
    [ -x "$cni_bin/$p" ] || die "CNI plugin $p missing in $cni_bin (apt-get install containernetworking-plugins)"
  done

  phase "pause image"
  local ctx="$state/pause-image"
  mkdir -p "$ctx"
  (cd "$repo" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--mod=mod}" nice -n 19 go build -trimpath -ldflags '-s -w' -o "$ctx/pause" ./deploy/kubetest/pause)
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t modcoord-pause:dev "$ctx" >/dev/null

  phase "certificates and tokens"
  (
    cd "$state/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=modcoord-kube-ca" 2>/dev/null
    cert() { # NAME SUBJECT EXT
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%b' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
    }
    cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$gw,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n"
    cert kubelet "/CN=$node" "subjectAltName=IP:$gw,DNS:$node\nextendedKeyUsage=serverAuth\n"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth\n"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  local u
  : > "$state/pki/tokens.csv"
  for u in admin kube-controller-manager kube-scheduler kubelet kube-proxy coredns; do
    local tok; tok=$(openssl rand -hex 24)
    local user=$u
    [ "$u" = kubelet ] && user="system:node:$node"
    [ "$u" = admin ] || [ "$u" = kubelet ] || user="system:$u"
    printf '%s,%s,%s,"system:masters"\n' "$tok" "$user" "$u" >> "$state/pki/tokens.csv"
    echo "$tok" > "$state/pki/$u.token"
  done

  local etcd_client etcd_peer api_port kcm_port sched_port kubelet_port kubelet_healthz proxy_healthz proxy_metrics dns_health dns_ready
  etcd_client=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); kcm_port=$(free_port); sched_port=$(free_port)
  kubelet_port=$(free_port); kubelet_healthz=$(free_port); proxy_healthz=$(free_port); proxy_metrics=$(free_port)
  dns_health=$(free_port); dns_ready=$(free_port)
  for u in admin kube-controller-manager kube-scheduler kubelet kube-proxy coredns; do
    cat > "$state/$u.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: modcoord-kube
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $state/pki/ca.crt
users:
  - name: $u
    user:
      token: $(cat "$state/pki/$u.token")
contexts:
  - name: modcoord-kube
    context: {cluster: modcoord-kube, user: $u}
current-context: modcoord-kube
EOF
    chmod 600 "$state/$u.kubeconfig"
  done
  cat > "$state/env" <<EOF
export KUBECONFIG=$state/admin.kubeconfig
export KUBE_BIN=$state/bin
export KUBECTL=$state/bin/kubectl
export KUBE_STATE=$state
export KUBE_API_PORT=$api_port
export CTR="ctr -a $state/containerd/containerd.sock -n k8s.io"
EOF
  local kubectl=("$state/bin/kubectl" --kubeconfig "$state/admin.kubeconfig" --request-timeout=20s)

  phase "network: bridge $bridge $gw, forwarding rules"
  ip link add "$bridge" type bridge 2>/dev/null || true
  ip addr replace "$gw/24" dev "$bridge"
  ip link set "$bridge" up
  # Docker's FORWARD policy is DROP: let pods talk to pods (also through a
  # Service's DNAT), and forward nothing from the pods anywhere else.
  iptables -I FORWARD 1 -i "$bridge" ! -o "$bridge" -j DROP
  iptables -I FORWARD 1 -i "$bridge" -o "$bridge" -j ACCEPT
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || sysctl -qw net.ipv4.ip_forward=1
  if [ -f /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1
  else
    modprobe br_netfilter 2>/dev/null || log "warning: br_netfilter missing: a pod may not reach a Service whose backend is on the same bridge"
  fi
  cat > "$state/cni/conf/10-modcoord.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "modcoord-kube",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gw"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$state/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  phase "etcd"
  spawn etcd "$state/bin/etcd" --data-dir "$state/etcd" --client-url "http://127.0.0.1:$etcd_client" \
    --peer-url "http://127.0.0.1:$etcd_peer" --ready-file "$state/etcd.ready"
  wait_for "etcd" 60 test -f "$state/etcd.ready"

  phase "kube-apiserver"
  spawn kube-apiserver "$state/bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$state/pki/apiserver.crt" --tls-private-key-file="$state/pki/apiserver.key" \
    --client-ca-file="$state/pki/ca.crt" \
    --token-auth-file="$state/pki/tokens.csv" \
    --kubelet-client-certificate="$state/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$state/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$state/pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$state/pki/sa.pub" \
    --service-account-signing-key-file="$state/pki/sa.key" \
    --service-cluster-ip-range="$svc_cidr" \
    --service-node-port-range=30000-32767 \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota,PodSecurity \
    --profiling=false
  api_ready() { curl -fsS --max-time 5 --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $(cat "$state/pki/admin.token")" "https://127.0.0.1:$api_port/readyz" | grep -q '^ok$'; }
  wait_for "kube-apiserver /readyz" 180 api_ready

  phase "kube-controller-manager, kube-scheduler"
  spawn kube-controller-manager "$state/bin/kube-controller-manager" \
    --kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --leader-elect=false \
    --root-ca-file="$state/pki/ca.crt" \
    --service-account-private-key-file="$state/pki/sa.key" \
    --use-service-account-credentials=false \
    --profiling=false
  spawn kube-scheduler "$state/bin/kube-scheduler" \
    --kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" \
    --leader-elect=false --profiling=false
  healthz() { curl -fsS --max-time 5 -k "https://127.0.0.1:$1/healthz" | grep -q '^ok$'; }
  wait_for "kube-controller-manager /healthz" 120 healthz "$kcm_port"
  wait_for "kube-scheduler /healthz" 120 healthz "$sched_port"

  phase "containerd (separate instance, CRI on its own socket)"
  local cd="$state/containerd"
  cat > "$cd/config.toml" <<EOF
version = 2
root = "$cd/root"
state = "$cd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$cd/containerd.sock"
[ttrpc]
  address = "$cd/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/modcoord-pause:dev"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: a negative oom_score_adj (the sandbox gets
  # -998) would fail runc init ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$cd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$state/cni/conf"
EOF
  spawn containerd containerd --config "$cd/config.toml"
  local ctr=(ctr -a "$cd/containerd.sock" -n k8s.io)
  wait_for "containerd" 60 "${ctr[@]}" version
  docker save modcoord-pause:dev | "${ctr[@]}" images import - >/dev/null
  # (Not `ctr | grep -q`: with pipefail, grep's early exit fails ctr with SIGPIPE.)
  local imgs; imgs=$("${ctr[@]}" images ls -q)
  grep -q 'modcoord-pause:dev' <<< "$imgs" || die "pause image not imported"

  phase "kubelet"
  : > "$state/resolv.conf"
  cat > "$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gw
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $state/pki/kubelet.crt
tlsPrivateKeyFile: $state/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$cd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$gw]
resolvConf: $state/resolv.conf
podLogsDir: $state/pod-logs
serializeImagePulls: false
# Nothing can be pulled here: never let image GC drop an imported image.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
maxPods: 60
EOF
  spawn kubelet "$state/bin/kubelet" --config="$state/kubelet.yaml" \
    --kubeconfig="$state/kubelet.kubeconfig" \
    --root-dir="$state/kubelet" \
    --hostname-override="$node" --node-ip="$gw" \
    --v=1
  node_ready() { [ "$("${kubectl[@]}" get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
  wait_for "node $node Ready" 180 node_ready

  phase "kube-proxy"
  cat > "$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
hostnameOverride: $node
clusterCIDR: $pod_cidr
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
# Leave the host's conntrack sysctls alone (0: do not set), and serve
# NodePorts on the bridge address only (no route_localnet for 127.0.0.1).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: ["$gw/32"]
EOF
  spawn kube-proxy "$state/bin/kube-proxy" --config="$state/kube-proxy.yaml"
  proxy_ok() { curl -fsS --max-time 5 "http://127.0.0.1:$proxy_healthz/healthz"; }
  wait_for "kube-proxy /healthz" 60 proxy_ok

  phase "coredns on $gw:53"
  cat > "$state/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
  bind $gw
  ready 127.0.0.1:$dns_ready
  health 127.0.0.1:$dns_health
  errors
  cache 5
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $state/coredns.kubeconfig modcoord-kube
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
}
# Every other name: refused (no forwarding: nothing leaves the machine).
.:53 {
  bind $gw
  errors
}
EOF
  spawn coredns "$state/bin/coredns" -conf "$state/Corefile"
  dns_ok() { curl -fsS --max-time 5 "http://127.0.0.1:$dns_ready/ready"; }
  wait_for "coredns /ready" 120 dns_ok

  phase "pv-provisioner"
  cat > "$state/pv-provisioner.sh" <<'EOF'
#!/usr/bin/env bash
# Binds every Pending PVC that has no volume to a new hostPath PV.
state=$1
k=("$state/bin/kubectl" --kubeconfig "$state/admin.kubeconfig" --request-timeout=10s)
while :; do
  "${k[@]}" get pvc -A -o jsonpath='{range .items[?(@.status.phase=="Pending")]}{.metadata.namespace} {.metadata.name} {.spec.resources.requests.storage} {.spec.accessModes[0]} {.spec.volumeName}{"\n"}{end}' 2>/dev/null |
  while read -r ns name size mode vol; do
    [ -n "$name" ] && [ -z "$vol" ] || continue
    pv="pv-$ns-$name"
    "${k[@]}" get pv "$pv" >/dev/null 2>&1 && continue
    dir="$state/volumes/$ns/$name"
    mkdir -p "$dir" && chmod 0777 "$dir"
    "${k[@]}" apply -f - <<YAML && echo "$(date +%T) $ns/$name -> $pv ($dir)"
apiVersion: v1
kind: PersistentVolume
metadata: {name: $pv, labels: {modcoord.dev/hostpath: "true"}}
spec:
  capacity: {storage: $size}
  accessModes: [$mode]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: $ns, name: $name}
  hostPath: {path: $dir, type: Directory}
YAML
  done
  sleep 2
done
EOF
  spawn pv-provisioner bash "$state/pv-provisioner.sh" "$state"

  phase "smoke: a pod runs to completion, kubectl logs reads it"
  "${kubectl[@]}" -n default apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: smoke}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
    - name: smoke
      image: docker.io/library/modcoord-pause:dev
      imagePullPolicy: Never
      args: [-sleep=1s]
EOF
  smoke_done() { [ "$("${kubectl[@]}" -n default get pod smoke -o jsonpath='{.status.phase}')" = Succeeded ]; }
  wait_for "the smoke pod to succeed" 120 smoke_done
  local smoke_log; smoke_log=$("${kubectl[@]}" -n default logs smoke)
  grep -q "hello from a container" <<< "$smoke_log" || die "smoke pod's log (kubectl logs) lacks its line"
  "${kubectl[@]}" -n default delete pod smoke --wait=false >/dev/null
  if command -v dig >/dev/null; then
    wait_for "coredns to answer kubernetes.default.svc.cluster.local" 30 sh -c "dig +short @$gw kubernetes.default.svc.cluster.local | grep -q ."
  fi

  trap - EXIT
  phase "up"
  echo "$state/env"
}

status() {
  [ -d "$state" ] || { echo "no cluster ($state absent)"; return 1; }
  local c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns pv-provisioner; do
    printf '%-24s %s\n' "$c" "$(alive "$c" && echo "running (pid $(cat "$state/pids/$c"))" || echo stopped)"
  done
}

load() {
  [ -f "$state/env" ] || die "no cluster: run up first"
  local ctr=(ctr -a "$state/containerd/containerd.sock" -n k8s.io) img
  for img in "$@"; do
    local t0; t0=$(date +%s)
    docker save "$img" | "${ctr[@]}" images import - >/dev/null
    log "loaded $img in $(( $(date +%s) - t0 ))s"
  done
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up ;;
  down) down "${1:-}" ;;
  status) status ;;
  load) load "$@" ;;
  *) echo "usage: $0 up|down [--keep-logs]|status|load IMAGE..." >&2; exit 2 ;;
esac
