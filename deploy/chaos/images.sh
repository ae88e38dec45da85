#!/usr/bin/env bash
# Builds the chaos suite's one container image, FROM scratch (nothing can be
# pulled here): the cgo modcoord binary with the shared libraries `ldd`
# lists (OpenBLAS, libgfortran, glibc, ...), the static chaosinfra helper
# (NATS server, etcd, an HTTP probe, a checkpoint verifier) and the
# training text at /opt/modcoord/data/tinyshakespeare.txt.
#
#   CHAOS_IMAGE   image tag (default modcoord-chaos:dev)
#   CHAOS_BUILD   staging directory outside the repository
#                 (default ${MODCOORD_CACHE:-/var/cache/modcoord}/chaos-image)
#
# Idempotent: the Go builds are cached and the image is rebuilt only when
# the content (binaries, libraries, data) changed; the content hash is the
# image label modcoord.chaos.content.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
image="${CHAOS_IMAGE:-modcoord-chaos:dev}"
stage="${CHAOS_BUILD:-${MODCOORD_CACHE:-/var/cache/modcoord}/chaos-image}"
mkdir -p "$stage/bin"
log() { echo "chaos-images: $*" >&2; }

# Serialize concurrent builds on one staging directory.
exec 9>"$stage/.lock"
flock -w 1800 9 || { log "timed out waiting for $stage/.lock"; exit 1; }

export GOFLAGS="${GOFLAGS:--mod=mod}"
t0=$(date +%s)
# netgo/osusergo: Go's own DNS resolver and user lookups, so the image needs
# no NSS configuration (Docker provides /etc/resolv.conf and /etc/hosts).
log "building modcoord (cgo, OpenBLAS)"
nice -n 10 go build -tags netgo,osusergo -o "$stage/bin/modcoord" ./cmd/modcoord
log "building chaosinfra (static)"
CGO_ENABLED=0 nice -n 10 go build -tags netgo,osusergo -o "$stage/bin/chaosinfra" ./deploy/chaos/chaosinfra
log "go builds took $(( $(date +%s) - t0 ))s"

# The root file system.
root="$stage/rootfs.new"
rm -rf "$root"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/opt/modcoord/data" "$root/data" "$root/ckpt" "$root/var/lib/etcd"
chmod 1777 "$root/tmp"
cp "$stage/bin/modcoord" "$stage/bin/chaosinfra" "$root/bin/"
cp data/tinyshakespeare.txt "$root/opt/modcoord/data/"
echo "root:x:0:0:root:/:/bin/modcoord" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
# Every library the dynamic binary loads, at the path ldd found it, with
# symlinks resolved (OpenBLAS sits behind Debian's alternatives links).
ldd "$stage/bin/modcoord" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
missing=$(ldd "$stage/bin/modcoord" | grep -c 'not found' || true)
[ "$missing" = 0 ] || { ldd "$stage/bin/modcoord" >&2; log "unresolved libraries"; exit 1; }

content=$(cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)
current=$(docker image inspect -f '{{index .Config.Labels "modcoord.chaos.content"}}' "$image" 2>/dev/null || true)
if [ "$current" = "$content" ]; then
  rm -rf "$root"
  log "$image is up to date ($content)"
  echo "$image"
  exit 0
fi
rm -rf "$stage/rootfs"
mv "$root" "$stage/rootfs"

libdirs=$(cd "$stage/rootfs" && find . -name '*.so*' -printf '%h\n' | sed 's|^\.||' | sort -u | paste -sd: -)
cat > "$stage/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/bin LD_LIBRARY_PATH=$libdirs OPENBLAS_NUM_THREADS=1
LABEL modcoord.chaos.content=$content org.opencontainers.image.source=$repo
WORKDIR /
ENTRYPOINT ["/bin/modcoord"]
EOF
printf 'bin\n.lock\nrootfs.new\n' > "$stage/.dockerignore"
log "docker build $image"
# The legacy builder is all this Docker engine has without buildx; its
# deprecation warning is shown only if the build fails.
if ! DOCKER_BUILDKIT=0 docker build -q -t "$image" -f "$stage/Dockerfile" "$stage" >/dev/null 2>"$stage/build.err"; then
  cat "$stage/build.err" >&2
  exit 1
fi
log "built $image ($content) in $(( $(date +%s) - t0 ))s"
echo "$image"
