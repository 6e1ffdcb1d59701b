#!/usr/bin/env bash
# The ingest benchmarks of docs/benchmarks.md on both telemetry variants, one after the
# other in one run: for each variant and each case, a fresh hub (bench-hub.sh) and one
# bench_ingest.py run, its output kept in $BENCH_LOGS/<variant>-<case>.txt.
#
#   loadtest/ingest-matrix.sh [variants] [cases]
#
# variants: "off on" by default (REMOTEGPU_TIMESCALEDB=off is plain PostgreSQL, on is
# TimescaleDB; "on" needs the extension). cases: names from the table below, default all.
set -euo pipefail
cd "$(dirname "$0")/.."

variants="${1:-off on}"
cases="${2:-paced-2000x0.3 paced-5000x0.8 flood-200 flood-2000}"
logs="${BENCH_LOGS:-/tmp/remotegpu-bench}"
password="${BENCH_ADMIN_PASSWORD:-benchpass123}"
mkdir -p "$logs"

args_of() {
    case "$1" in
        paced-2000x0.3) echo "--agents 2000 --interval 0.3 --duration 60 --processes 2" ;;
        paced-5000x0.8) echo "--agents 5000 --interval 0.8 --duration 60 --processes 2" ;;
        flood-200) echo "--flood --agents 200 --duration 60 --processes 2 --writer-baseline 15" ;;
        flood-2000) echo "--flood --agents 2000 --duration 60 --processes 2 --writer-baseline 15" ;;
        *) echo "unknown case $1" >&2; exit 2 ;;
    esac
}

for variant in $variants; do
    for case in $cases; do
        out="$logs/$variant-$case.txt"
        echo "== REMOTEGPU_TIMESCALEDB=$variant $case" >&2
        REMOTEGPU_TIMESCALEDB="$variant" loadtest/bench-hub.sh >"$logs/bench-hub.out" 2>&1 &
        hub=$!
        for _ in $(seq 100); do
            curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
            sleep 0.3
        done
        # shellcheck disable=SC2046
        .venv/bin/python loadtest/bench_ingest.py --admin-password "$password" \
            --dsn postgresql://postgres@127.0.0.1:5432/remotegpu_bench $(args_of "$case") \
            | tee "$out"
        kill "$hub"
        wait "$hub" 2>/dev/null || true
        sleep 2
    done
done
