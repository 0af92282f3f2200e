#!/usr/bin/env bash
# The long version of docs/reliability.md (CI runs the short one through scripts/test.sh and
# scripts/fuzz.sh): many more kill -9 cycles, power-loss seeds, model cases, contention and
# fuzzing time. Prints a summary table and writes it, with every log, to SOAK_OUT.
#
#   scripts/soak.sh                  # everything, at the sizes below
#   SOAK_ROWS="A F" scripts/soak.sh  # some rows
#
# Sizes (defaults): SOAK_KILL9_CYCLES=10000 per backend (kill 30-150 ms after READY),
# SOAK_POWER_LOSS_SEEDS=20000 per engine, SOAK_MODEL_CASES=2000, SOAK_CONTENTION_OPS=50000 per
# task, SOAK_FUZZ_SECONDS=600 per target, SOAK_CORRUPTION_SEEDS="1 2 3 4" (row E runs once as
# in CI, then once per seed: other flip offsets). SOAK_KILL9_BACKENDS="cowbtree lsm rocksdb"
# picks row A's backends. Rows C and D are exhaustive already; they run as in CI. The kill -9
# soaks of the backends run side by side (they wait on fsync and sleep, not on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

rows="${SOAK_ROWS:-A B C D E F G H}"
out="${SOAK_OUT:-soak-report}"
cycles="${SOAK_KILL9_CYCLES:-10000}"
seeds="${SOAK_POWER_LOSS_SEEDS:-20000}"
model_cases="${SOAK_MODEL_CASES:-2000}"
contention_ops="${SOAK_CONTENTION_OPS:-50000}"
fuzz_seconds="${SOAK_FUZZ_SECONDS:-600}"
mkdir -p "$out"
summary="$out/summary.md"
printf '| row | backend | what ran | result | minutes |\n|---|---|---|---|---:|\n' >"$summary"
status=0

wants() { [[ " $rows " == *" $1 "* ]]; }

# run ROW BACKEND WHAT LOG -- COMMAND...: runs COMMAND, logging to LOG, and adds a table row.
run() {
    local row=$1 backend=$2 what=$3 log=$4
    shift 5
    local start result
    start=$(date +%s)
    if "$@" >"$out/$log" 2>&1; then result=passed; else result="FAILED (see $log)"; status=1; fi
    local minutes=$(( ($(date +%s) - start + 30) / 60 ))
    local detail
    detail=$(grep -ho 'summary: .*' "$out/$log" | sed 's/^summary: //' | paste -sd ';' - || true)
    printf '| %s | %s | %s%s | %s | %s |\n' "$row" "$backend" "$what" "${detail:+ ($detail)}" \
        "$result" "$minutes" >>"$summary"
    echo "$row $backend: $result"
}

tests=(cargo test --all-features --locked)
echo "== building the tests"
cargo test --workspace --all-features --locked --no-run --quiet

if wants A; then
    for backend in ${SOAK_KILL9_BACKENDS:-cowbtree lsm rocksdb}; do
        run A "$backend" "$cycles kill -9 cycles per configuration" "A-$backend.log" -- \
            env ORBIT_KILL9_CYCLES="$cycles" ORBIT_KILL9_MAX_MS=150 \
            "${tests[@]}" -p "orbit-persistence-$backend" --test conformance \
            kill9_acknowledged_writes_survive -- --nocapture &
    done
    wait
fi
if wants B; then
    for backend in cowbtree lsm; do
        run B "$backend" "$seeds power-loss seeds" "B-$backend.log" -- \
            env ORBIT_POWER_LOSS_SEEDS="$seeds" "${tests[@]}" -p "orbit-persistence-$backend" \
            --test power_loss acknowledged_writes_survive_power_loss -- --nocapture
    done
fi
if wants C; then
    for backend in cowbtree lsm; do
        run C "$backend" "every crash point of the script, 3 ways" "C-$backend.log" -- \
            "${tests[@]}" -p "orbit-persistence-$backend" --test power_loss every_crash_point
    done
fi
if wants D; then
    for backend in cowbtree lsm; do
        run D "$backend" "every failing call of the script; 50 disk sizes" "D-$backend.log" -- \
            "${tests[@]}" -p "orbit-persistence-$backend" --test power_loss -- \
            every_io_error a_full_disk
    done
fi
if wants E; then
    # An empty seed is CI's fixed one.
    for seed in "" ${SOAK_CORRUPTION_SEEDS:-1 2 3 4}; do
        label="seed ${seed:-CI}"
        seeded=(env ORBIT_CORRUPTION_SEED="$seed")
        run E cowbtree "every file, ~60 flips and 5 cuts each, $label" \
            "E-cowbtree${seed:+-$seed}.log" -- "${seeded[@]}" "${tests[@]}" \
            -p orbit-persistence-cowbtree --test snapshots_and_corruption every_file
        run E lsm "every file, ~60 flips and 5 cuts each, $label" "E-lsm${seed:+-$seed}.log" -- \
            "${seeded[@]}" "${tests[@]}" -p orbit-persistence-lsm --test corruption
        run E rocksdb "every file, ~36 flips and 5 cuts each, $label" \
            "E-rocksdb${seed:+-$seed}.log" -- "${seeded[@]}" "${tests[@]}" \
            -p orbit-persistence-rocksdb --test corruption
    done
fi
if wants G; then
    for backend in memory cowbtree lsm rocksdb; do
        run G "$backend" "$model_cases model sequences per configuration" "G-$backend.log" -- \
            env ORBIT_MODEL_CASES="$model_cases" "${tests[@]}" -p "orbit-persistence-$backend" \
            --test conformance model_based_random_operations
    done
fi
if wants H; then
    for backend in memory cowbtree lsm rocksdb; do
        run H "$backend" "8 tasks x $contention_ops calls per configuration" "H-$backend.log" -- \
            env ORBIT_CONTENTION_OPS="$contention_ops" "${tests[@]}" \
            -p "orbit-persistence-$backend" --test conformance linearizable_under_contention
    done
fi
if wants F; then
    run F all "every fuzz target, $fuzz_seconds s each" F.log -- \
        env FUZZ_SECONDS="$fuzz_seconds" FUZZ_WORK_DIR="$out/fuzz" scripts/fuzz.sh
    # The per-target table of the fuzz run.
    sed -n '/^target /,/^FUZZ:/p' "$out/F.log" >"$out/fuzz-table.txt" || true
fi

grep -q FAILED "$summary" && status=1

echo
cat "$summary"
[ -f "$out/fuzz-table.txt" ] && cat "$out/fuzz-table.txt"
exit "$status"
