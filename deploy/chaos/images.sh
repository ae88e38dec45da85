#!/usr/bin/env bash
# Builds the chaos suite's one container image, FROM scratch (nothing can be
# pulled here). It holds the cgo modcoord binary with the shared libraries it
# loads, the training text at /opt/modcoord/data/tinyshakespeare.txt, and
# the static chaosinfra helper (NATS server, etcd, an HTTP prober, a
# checkpoint verifier), all in /usr/local/bin, running as uid 65532.
#
# Two ways, chosen by CHAOS_BASE:
#   auto    (default) deploy, and own if deploy/build-images.sh is missing or fails
#   deploy  the deployment image modcoord:${IMAGE_TAG:-dev} built by
#           deploy/build-images.sh (so the suite tests what ships), plus chaosinfra
#   own     a root file system assembled here: modcoord + the libraries ldd
#           lists + the data, plus chaosinfra (same layout as the deployment image)
#
#   CHAOS_IMAGE   image tag (default modcoord-chaos:dev)
#   CHAOS_BUILD   staging directory outside the repository
#                 (default ${MODCOORD_CACHE:-/var/cache/modcoord}/chaos-image)
#
# Idempotent: the Go builds are cached and the image is rebuilt only when
# its content changed (image label modcoord.chaos.content). Prints the image
# name on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
image="${CHAOS_IMAGE:-modcoord-chaos:dev}"
base="${CHAOS_BASE:-auto}"
stage="${CHAOS_BUILD:-${MODCOORD_CACHE:-/var/cache/modcoord}/chaos-image}"
mkdir -p "$stage/bin"
log() { echo "chaos-images: $*" >&2; }
t0=$(date +%s)

# Serialize concurrent builds on one staging directory.
exec 9>"$stage/.lock"
flock -w 1800 9 || { log "timed out waiting for $stage/.lock"; exit 1; }

export GOFLAGS="${GOFLAGS:--mod=mod}"
# netgo/osusergo: Go's own DNS resolver and user lookups, so the image needs
# no NSS configuration (Docker provides /etc/resolv.conf and /etc/hosts).
log "building chaosinfra (static)"
CGO_ENABLED=0 nice -n 10 go build -tags netgo,osusergo -o "$stage/bin/chaosinfra" ./deploy/chaos/chaosinfra

from=""
case $base in
auto | deploy)
  if [ -f deploy/build-images.sh ]; then
    log "building the deployment image with deploy/build-images.sh (log: $stage/deploy-build.log)"
    if IMAGES=modcoord bash deploy/build-images.sh >"$stage/deploy-build.log" 2>&1; then
      from="modcoord:${IMAGE_TAG:-dev}"
    else
      tail -20 "$stage/deploy-build.log" >&2
      log "deploy/build-images.sh failed"
    fi
  else
    log "no deploy/build-images.sh"
  fi
  if [ -z "$from" ] && [ "$base" = deploy ]; then exit 1; fi
  ;;
own) ;;
*)
  log "CHAOS_BASE=$base: want auto, deploy or own"
  exit 2
  ;;
esac

root="$stage/rootfs.new"
rm -rf "$root"
mkdir -p "$root/usr/local/bin"
cp "$stage/bin/chaosinfra" "$root/usr/local/bin/"
if [ -n "$from" ]; then
  log "on top of $from"
  # Its content: our helper and the base image's id.
  extra="$(docker image inspect -f '{{.Id}}' "$from")"
  cat > "$stage/Dockerfile.in" <<EOF
FROM $from
COPY rootfs/ /
EOF
else
  log "building modcoord (cgo, OpenBLAS) for our own root file system"
  nice -n 10 go build -tags netgo,osusergo -o "$stage/bin/modcoord" ./cmd/modcoord
  extra=own
  mkdir -p "$root/etc" "$root/opt/modcoord/data"
  cp "$stage/bin/modcoord" "$root/usr/local/bin/"
  cp data/tinyshakespeare.txt "$root/opt/modcoord/data/"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  # Every library the binary loads, at the path ldd found it, with symlinks
  # resolved (OpenBLAS sits behind Debian's alternatives links).
  if ldd "$stage/bin/modcoord" | grep -q 'not found'; then
    ldd "$stage/bin/modcoord" >&2
    log "unresolved libraries"
    exit 1
  fi
  ldd "$stage/bin/modcoord" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  libdirs=$(cd "$root" && find . -name '*.so*' -printf '%h\n' | sed 's|^\.||' | sort -u | paste -sd: -)
  # The directories uid 65532 writes to; Docker seeds a new named volume
  # from the image's directory, ownership included.
  rm -rf "$stage/writable"
  for d in tmp var/lib/modcoord checkpoints var/lib/etcd; do mkdir -p "$stage/writable/$d"; done
  chmod 1777 "$stage/writable/tmp"
  cat > "$stage/Dockerfile.in" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 writable/ /
ENV PATH=/usr/local/bin LD_LIBRARY_PATH=$libdirs OPENBLAS_NUM_THREADS=1
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/modcoord"]
EOF
fi

content=$( (cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$extra"; cat "$stage/Dockerfile.in") | sha256sum | cut -c1-32)
current=$(docker image inspect -f '{{index .Config.Labels "modcoord.chaos.content"}}' "$image" 2>/dev/null || true)
if [ "$current" = "$content" ]; then
  rm -rf "$root"
  log "$image is up to date ($content)"
  echo "$image"
  exit 0
fi
rm -rf "$stage/rootfs"
mv "$root" "$stage/rootfs"
{
  cat "$stage/Dockerfile.in"
  echo "LABEL modcoord.chaos.content=$content org.opencontainers.image.source=$repo"
} > "$stage/Dockerfile"
printf 'bin\n.lock\nrootfs.new\n*.log\n' > "$stage/.dockerignore"
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
log "docker build $image"
# The legacy builder is all this Docker engine has without buildx; its
# deprecation warning is shown only if the build fails.
if ! DOCKER_BUILDKIT=0 docker build -q -t "$image" -f "$stage/Dockerfile" "$stage" >/dev/null 2>"$stage/build.err"; then
  cat "$stage/build.err" >&2
  exit 1
fi
# Drop the image this one replaced, unless something still uses it.
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
log "built $image ($content) in $(( $(date +%s) - t0 ))s"
echo "$image"
