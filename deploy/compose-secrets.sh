#!/usr/bin/env bash
# Writes the secrets deploy/compose.yaml reads, unless they exist:
#
#   token          the API bearer token (coordinators, workers, clients)
#   nats-password  the workers' NATS password
#   nats-auth.conf the NATS server's authorization block with that password
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
# Hex: alphanumeric, so it needs no quoting anywhere.
gen() { openssl rand -hex "$(( $1 / 2 ))"; }
[ -s "$dir/token" ] || { gen 48 > "$dir/token"; echo "wrote $dir/token" >&2; }
if [ ! -s "$dir/nats-password" ]; then
  gen 32 > "$dir/nats-password"
  rm -f "$dir/nats-auth.conf"
  echo "wrote $dir/nats-password" >&2
fi
if [ ! -s "$dir/nats-auth.conf" ]; then
  printf 'authorization {\n  users: [\n    { user: "modcoord", password: "%s" }\n  ]\n}\n' "$(cat "$dir/nats-password")" > "$dir/nats-auth.conf"
  echo "wrote $dir/nats-auth.conf" >&2
fi
if [ "$(id -u)" = 0 ]; then
  chown 65532:65532 "$dir"/token "$dir"/nats-password "$dir"/nats-auth.conf
  chmod 0400 "$dir"/token "$dir"/nats-password "$dir"/nats-auth.conf
else
  chmod 0444 "$dir"/token "$dir"/nats-password "$dir"/nats-auth.conf
  echo "compose-secrets: not root, so the secrets are world-readable for uid 65532 in the containers" >&2
fi
