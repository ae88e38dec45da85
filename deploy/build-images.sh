#!/usr/bin/env bash
# Builds the three deployment images without any registry (nothing can be
# pulled: every image is FROM scratch):
#
#   modcoord:dev       the cgo modcoord binary (OpenBLAS) plus exactly the
#                      shared libraries `ldd` lists, the bundled training text
#                      at /opt/modcoord/data/tinyshakespeare.txt
#   modcoord-nats:dev  nats-server (static, CGO_ENABLED=0)
#   modcoord-etcd:dev  etcd (static, CGO_ENABLED=0; go.etcd.io/etcd/server/v3's main)
#
# All run as uid/gid 65532 and keep their binary at /usr/local/bin with it as
# the ENTRYPOINT, which is what helm/modcoord and deploy/compose.yaml expect.
#
#   MODCOORD_CACHE   cache root (default /var/cache/modcoord); staging goes to
#                    $MODCOORD_CACHE/images, outside the repository
#   IMAGE_TAG        tag for all three (default dev)
#   IMAGES           which to build (default "modcoord nats etcd")
#
# Idempotent and fast on rebuild: Go's build cache makes the compiles cheap,
# and an image is rebuilt only when its content (binary, libraries, data)
# changed; the content hash is the image label modcoord.content.
#
# nats-server and etcd are built at the versions the repository's go.mod
# pins, through a copy of go.mod/go.sum (-modfile), so the repository's own
# go.mod/go.sum are never modified.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tag="${IMAGE_TAG:-dev}"
stage="${MODCOORD_CACHE:-/var/cache/modcoord}/images"
images="${IMAGES:-modcoord nats etcd}"
mkdir -p "$stage/bin"
log() { echo "build-images: $*" >&2; }
t0=$(date +%s)

# Serialize concurrent builds on one staging directory.
exec 9>"$stage/.lock"
flock -w 1800 9 || { log "timed out waiting for $stage/.lock"; exit 1; }

docker info >/dev/null 2>&1 || { log "the Docker engine is not reachable"; exit 1; }

# netgo/osusergo: Go's own DNS resolver and user lookups, so no image needs
# NSS configuration (Kubernetes and Docker provide /etc/resolv.conf, /etc/hosts).
gobuild() { nice -n 19 go build -trimpath -tags netgo,osusergo -ldflags '-s -w' "$@"; }

# A copy of the module files for the dependency builds: -mod=mod may add
# go.sum lines for packages the repository itself does not import.
cp go.mod "$stage/deps.mod"
cp go.sum "$stage/deps.sum"
depbuild() { CGO_ENABLED=0 GOFLAGS=-mod=mod gobuild -modfile="$stage/deps.mod" "$@"; }

# assemble NAME ROOTFS BINARY: writes the Dockerfile and builds NAME:$tag
# unless an image with the same content hash exists.
assemble() {
  local name=$1 root=$2 bin=$3 extra_env=${4:-}
  local content current
  content=$(cd "$root" && find . \( -type f -o -type l \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)
  current=$(docker image inspect -f '{{index .Config.Labels "modcoord.content"}}' "$name:$tag" 2>/dev/null || true)
  if [ "$current" = "$content" ]; then
    log "$name:$tag is up to date ($content)"
    rm -rf "$root"
    return 0
  fi
  local ctx="$stage/ctx-$name"
  rm -rf "$ctx"
  mkdir -p "$ctx/writable"
  mv "$root" "$ctx/rootfs"
  # Directories the non-root user writes to. Docker seeds a new named
  # volume from the image's directory, ownership included, so compose
  # volumes mounted there are writable by 65532 too.
  for d in tmp var/lib/modcoord checkpoints var/lib/etcd; do mkdir -p "$ctx/writable/$d"; done
  chmod 1777 "$ctx/writable/tmp"
  cat > "$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 writable/ /
ENV PATH=/usr/local/bin $extra_env
LABEL modcoord.content=$content org.opencontainers.image.source=$repo org.opencontainers.image.title=$name
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/$bin"]
EOF
  log "docker build $name:$tag"
  # The legacy builder is all this Docker engine has without buildx; its
  # output is shown only if the build fails.
  if ! DOCKER_BUILDKIT=0 docker build -q -t "$name:$tag" "$ctx" >/dev/null 2>"$ctx/build.err"; then
    cat "$ctx/build.err" >&2
    exit 1
  fi
  rm -rf "$ctx"
}

# base_rootfs DIR: the files every image has.
base_rootfs() {
  local root=$1
  rm -rf "$root"
  mkdir -p "$root/usr/local/bin" "$root/etc"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  # Debian's CA bundle, so TLS to NATS/etcd with public CAs works.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
}

for image in $images; do
  case $image in
  modcoord)
    t=$(date +%s)
    log "building modcoord (cgo, OpenBLAS)"
    GOFLAGS=-mod=mod gobuild -o "$stage/bin/modcoord" ./cmd/modcoord
    root="$stage/rootfs-modcoord"
    base_rootfs "$root"
    cp "$stage/bin/modcoord" "$root/usr/local/bin/"
    mkdir -p "$root/opt/modcoord/data"
    cp data/tinyshakespeare.txt "$root/opt/modcoord/data/"
    # Every library the binary loads, at the path the dynamic loader found
    # it, symlinks resolved (OpenBLAS sits behind Debian's alternatives).
    if ldd "$stage/bin/modcoord" | grep -q 'not found'; then
      ldd "$stage/bin/modcoord" >&2
      log "unresolved libraries"
      exit 1
    fi
    ldd "$stage/bin/modcoord" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
      while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
      done
    libdirs=$(cd "$root" && find . -name '*.so*' -printf '%h\n' | sed 's|^\.||' | sort -u | paste -sd: -)
    # OPENBLAS_NUM_THREADS=1: modcoord runs one model replica per core with
    # single-threaded BLAS; OpenBLAS's own threads would oversubscribe.
    assemble modcoord "$root" modcoord "LD_LIBRARY_PATH=$libdirs OPENBLAS_NUM_THREADS=1"
    log "modcoord:$tag done in $(( $(date +%s) - t ))s"
    ;;
  nats)
    t=$(date +%s)
    log "building nats-server $(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2) (static)"
    depbuild -o "$stage/bin/nats-server" github.com/nats-io/nats-server/v2
    root="$stage/rootfs-nats"
    base_rootfs "$root"
    cp "$stage/bin/nats-server" "$root/usr/local/bin/"
    assemble modcoord-nats "$root" nats-server
    log "modcoord-nats:$tag done in $(( $(date +%s) - t ))s"
    ;;
  etcd)
    t=$(date +%s)
    log "building etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3) (static)"
    depbuild -o "$stage/bin/etcd" go.etcd.io/etcd/server/v3
    root="$stage/rootfs-etcd"
    base_rootfs "$root"
    cp "$stage/bin/etcd" "$root/usr/local/bin/"
    # No ETCD_* defaults here: etcd refuses to start when a variable and the
    # matching flag are both set, and the chart and compose pass flags.
    assemble modcoord-etcd "$root" etcd
    log "modcoord-etcd:$tag done in $(( $(date +%s) - t ))s"
    ;;
  *)
    log "unknown image $image (want modcoord, nats, etcd)"
    exit 2
    ;;
  esac
done
log "done in $(( $(date +%s) - t0 ))s"
