#!/bin/bash
# km2pg on a local Citus cluster: a coordinator and two workers on ports PORT0, PORT0+1, PORT0+2.
#
#   scripts/citus.sh up      build Citus if it is not installed yet, start the three nodes
#   scripts/citus.sh test    up, then the database tests and tests/citus against the cluster
#   scripts/citus.sh dsn     print the coordinator's DSN for a database NAME (default km2pg),
#                            made on every node with the workers registered (KM2PG_DSN=$(...))
#   scripts/citus.sh dsn-if-up  the same when the cluster is up, else nothing (for `make bench`)
#   scripts/citus.sh down    stop the nodes
#
# Building needs root (Debian packages, PostgreSQL 15) and the Citus source: CITUS_SRC (a source
# tree) or CITUS_GIT (a git directory of citusdata/citus, e.g. what `git clone --bare` makes).
# The nodes are built and run by ../shared/citus/build-and-start.sh (CITUS_SCRIPT overrides).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
script=${CITUS_SCRIPT:-$repo/../shared/citus/build-and-start.sh}
export PORT0=${PORT0:-9700}
HOW="set CITUS_GIT=<git dir of citusdata/citus> or CITUS_SRC=<Citus source tree>: make test-citus CITUS_GIT=/path/to/citus.git"

citus_installed() {
  [ -f "$(/usr/lib/postgresql/15/bin/pg_config --sharedir 2>/dev/null)/extension/citus.control" ]
}

up() {
  if /usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -p "$PORT0" 2>/dev/null; then
    return 0  # already up
  fi
  [ -f "$script" ] || { echo "no $script (the shared folder beside the repo; or set CITUS_SCRIPT)" >&2; exit 2; }
  if ! citus_installed; then
    [ -n "${CITUS_SRC:-}${CITUS_GIT:-}" ] || { echo "Citus is not installed and no source is given: $HOW" >&2; exit 2; }
    bash "$script" build
  fi
  bash "$script" start
}

run_tests() {
  up
  export KM2PG_TEST_DSN="postgresql://postgres@127.0.0.1:$PORT0/postgres"
  export KM2PG_TEST_CITUS_WORKERS="127.0.0.1:$((PORT0 + 1)),127.0.0.1:$((PORT0 + 2))"
  cd "$repo"
  .venv/bin/python -m pytest tests/citus tests/integration tests/faults tests/migrations tests/functions "$@"
}

case ${1:-} in
  up) up ;;
  test) shift; run_tests "$@" ;;
  dsn) bash "$script" db "${2:-km2pg}" | tail -1 ;;
  dsn-if-up)
    if /usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -p "$PORT0" 2>/dev/null; then
      bash "$script" db "${2:-km2pg}" | tail -1
    fi ;;
  down) bash "$script" stop ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
