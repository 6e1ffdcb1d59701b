#!/usr/bin/env bash
# Starts a hub for the benchmarks on a fresh database, optionally fed by a simulated fleet.
#
#   loadtest/bench-hub.sh [--fleet N] [--port 8080] [--db remotegpu_bench]
#
# Destroys and recreates database --db (default remotegpu_bench) and the Redis keys under
# prefix "bench:". Creates admin "admin" with password $BENCH_ADMIN_PASSWORD (default
# benchpass123). Extra REMOTEGPU_* settings are taken from the environment. Prints the
# hub's pid ("hub pid N") and keeps running until interrupted; logs go to $BENCH_LOGS
# (default /tmp/remotegpu-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

fleet=0 port=8080 db=remotegpu_bench
while [ $# -gt 0 ]; do
    case "$1" in
        --fleet) fleet="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --db) db="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
password="${BENCH_ADMIN_PASSWORD:-benchpass123}"
logs="${BENCH_LOGS:-/tmp/remotegpu-bench}"
mkdir -p "$logs"

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
    -c "CREATE DATABASE $db"
redis-cli -h 127.0.0.1 --scan --pattern 'bench:*' | xargs -r redis-cli -h 127.0.0.1 unlink >/dev/null

export REMOTEGPU_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/$db"
export REMOTEGPU_REDIS_PREFIX=bench:
export REMOTEGPU_JWT_SECRET="${REMOTEGPU_JWT_SECRET:-bench-only-secret-not-for-production-use-000000}"
export REMOTEGPU_WS_MAX_CONNECTIONS_PER_USER="${REMOTEGPU_WS_MAX_CONNECTIONS_PER_USER:-100000}"
ulimit -n "$(ulimit -Hn)"

.venv/bin/remotegpu migrate
.venv/bin/remotegpu create-admin --username admin --password "$password" >/dev/null

children=()
trap 'kill "${children[@]}" 2>/dev/null; wait' EXIT INT TERM
.venv/bin/remotegpu serve --host 127.0.0.1 --port "$port" >"$logs/hub.log" 2>&1 &
children+=($!)
echo "hub pid $! on port $port, metrics on port ${REMOTEGPU_METRICS_PORT:-9464}, log $logs/hub.log"
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.2
done

if [ "$fleet" -gt 0 ]; then
    REMOTEGPU_ADMIN_PASSWORD="$password" .venv/bin/remotegpu agent-mock \
        --hub "http://127.0.0.1:$port" --machines "$fleet" --admin-user admin --silent-fraction 0 \
        --summary-interval 0 --tokens-file "$logs/fleet-tokens.json" >"$logs/fleet.log" 2>&1 &
    children+=($!)
    echo "fleet of $fleet machines, pid $!, log $logs/fleet.log"
fi
wait
