#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL server:
#
#   bash scripts/with-postgres.sh cargo test --features postgres
#
# - installs PostgreSQL from the Debian packages if no server binaries exist;
# - creates a cluster in a fresh temporary directory, owned by an unprivileged
#   user when run as root (the server refuses to run as root);
# - starts it on a free loopback port (127.0.0.1 only), with durability
#   settings relaxed for speed (the tests kill clients, never the server);
# - exports LEASEHOLD_PG_URL for the command, then stops the server and
#   removes the directory, whatever the command's outcome.
#
# Exits with the command's status. Fails loudly if no server can be started.
set -euo pipefail

log() { printf '[with-postgres] %s\n' "$*" >&2; }

find_pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root (or sudo) to install PostgreSQL"; return 1
  fi
}

if ! PG_BIN=$(find_pg_bin); then
  log "no PostgreSQL server found: installing it from the Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # Do not let the package start its own cluster: we run a private one.
  # (A policy-rc.d the machine already has is left as it is.)
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    own_policy=yes
  fi
  install_status=0
  as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null || install_status=$?
  [ -n "$own_policy" ] && as_root rm -f /usr/sbin/policy-rc.d
  [ "$install_status" -eq 0 ] || { log "apt-get install postgresql failed ($install_status)"; exit 1; }
  PG_BIN=$(find_pg_bin) || { log "PostgreSQL installation failed"; exit 1; }
fi
log "server binaries: $PG_BIN"

# The server must not run as root: use the packaged 'postgres' user (or nobody).
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
  RUN_AS=(runuser -u "$PG_USER" --)
fi

WORK=$(mktemp -d /tmp/leasehold-pg.XXXXXX)
chmod 755 "$WORK"
[ ${#RUN_AS[@]} -gt 0 ] && chown "$PG_USER" "$WORK"

cleanup() {
  "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; log "initdb failed"; exit 1; }

started=""
for attempt in 1 2 3 4 5 6 7 8; do
  PORT=$((20000 + (RANDOM % 20000)))
  if "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null 2>&1; then
    started=yes
    break
  fi
  log "start on port $PORT failed (attempt $attempt); retrying on another port"
done
if [ -z "$started" ]; then
  cat "$WORK/server.log" >&2 || true
  log "!!! could not start a PostgreSQL server: the PostgreSQL tests cannot run !!!"
  exit 1
fi

"${RUN_AS[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres leasehold_test
export LEASEHOLD_PG_URL="postgres://postgres@127.0.0.1:$PORT/leasehold_test"
log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') listening at $LEASEHOLD_PG_URL"

set +e
"$@"
status=$?
set -e
exit $status
