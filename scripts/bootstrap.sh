#!/bin/sh
# Idempotent bootstrap: system packages (PostgreSQL server, PgBouncer; with --test also
# Redis and Chromium), then npm packages (which bring the project's own Node.js 24). Fast
# when nothing is missing.
set -eu
cd "$(dirname "$0")/.."

need_apt=""
pg_bin=""
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && pg_bin="$d"
done
[ -n "$pg_bin" ] || need_apt="$need_apt postgresql"
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  need_apt="$need_apt pgbouncer"
fi
command -v openssl >/dev/null 2>&1 || need_apt="$need_apt openssl"
# The test suite also runs a real Redis (shared rate-limit counters across replicas).
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/redis-server ]; then
  need_apt="$need_apt redis-server"
fi
# The dashboard's browser tests drive Debian's Chromium through playwright-core (never a
# browser download).
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  need_apt="$need_apt chromium"
fi

if [ -n "$need_apt" ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$need_apt"
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      echo "bootstrap: installing$need_apt with sudo" >&2
      sudo sh -c "$cmd" >&2
    else
      echo "bootstrap: missing system packages:$need_apt" >&2
      echo "bootstrap: run this once, then try again:" >&2
      echo "  sudo sh -c '$cmd'" >&2
      exit 1
    fi
  else
    echo "bootstrap: installing$need_apt" >&2
    sh -c "$cmd" >&2
  fi
  # The distribution packages start their own services on the default ports; Bulwark
  # runs its own processes, so stop those if they were started (they stay installed).
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _rest; do
      pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
    done
  fi
  if [ -x /etc/init.d/pgbouncer ]; then /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true; fi
  if [ -x /etc/init.d/redis-server ]; then /etc/init.d/redis-server stop >/dev/null 2>&1 || true; fi
fi

# npm packages, including the `node` package (Node.js 24 inside the project).
stamp=node_modules/.bulwark-lock
stale() { [ ! -x node_modules/.bin/node ] || [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; }
if stale; then
  # Two runs in one checkout must not run `npm ci` at once (it fails half-way, ENOTEMPTY): take
  # turns on a lock held on the lockfile, and look again once it is ours.
  if command -v flock >/dev/null 2>&1; then
    exec 9<package-lock.json
    flock 9
  fi
  if stale; then
    echo "bootstrap: installing npm packages (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    cp package-lock.json "$stamp"
  fi
fi
major=$(node_modules/.bin/node -p 'process.versions.node.split(".")[0]')
if [ "$major" != "24" ]; then
  echo "bootstrap: expected Node.js 24 in node_modules/.bin/node, found $major" >&2
  exit 1
fi
