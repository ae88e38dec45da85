#!/usr/bin/env bash
# Writes the secrets deploy/compose.yaml reads, unless they exist:
#
#   tls/           ca.crt and <role>-compose.crt/.key for every role
#                  (coordinator, worker, user, etcd, nats), valid for the
#                  service names c0 c1 c2 etcd nats and localhost; compose
#                  mounts each container's own role's files in
#                  /etc/modcoord/tls (deploy/certgen; needs Go). Every link
#                  is mutual TLS: there is no token and no NATS password.
#                  The user certificate is the CLI's (--ca, --cert).
#   ca/            the cluster CA, ca.key included; mounted nowhere
#
# Run again, it keeps what exists and is valid and renews certificates
# close to expiry (pki.EnsureDir).
#
#   MODCOORD_SECRETS  directory (default deploy/secrets, git-ignored)
#
# The containers run as uid 65532 and compose bind-mounts file secrets with
# their host ownership, so as root the files are chowned to 65532 (mode
# 0400); otherwise they are made world-readable (0444) with a warning.
set -euo pipefail
cd "$(dirname "$0")"
dir="${MODCOORD_SECRETS:-secrets}"
mkdir -p "$dir"
chmod 0755 "$dir"
# Secrets of earlier releases (bearer token, NATS password), now unused.
for old in token nats-password nats-auth.conf; do
  if [ -e "$dir/$old" ]; then
    rm -f "$dir/$old"
    echo "removed $dir/$old (unused: every link is mutual TLS)" >&2
  fi
done
# TLS: the CA in ca/, what the containers mount in tls/.
abs=$(cd "$dir" && pwd)
(cd .. && GOFLAGS="${GOFLAGS:--mod=mod}" go run ./deploy/certgen -ca "$abs/ca" -out "$abs/tls" -name compose \
  -hosts c0,c1,c2,etcd,nats,localhost,127.0.0.1,::1)
chmod 0700 "$dir/ca"
chmod 0755 "$dir/tls"
# The user certificate is for the CLI on this host: not made 65532's.
mounted=("$dir"/tls/ca.crt "$dir"/tls/{coordinator,worker,etcd,nats}-compose.{crt,key})
if [ "$(id -u)" = 0 ]; then
  chown 65532:65532 "${mounted[@]}"
  chmod 0400 "${mounted[@]}"
else
  chmod 0444 "${mounted[@]}"
  echo "compose-secrets: not root, so the secrets are world-readable for uid 65532 in the containers" >&2
fi
