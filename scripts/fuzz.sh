#!/usr/bin/env bash
# docs/reliability.md row F: runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each (default 60),
# two at a time, starting from the checked-in seed corpus (fuzz/corpus/), under AddressSanitizer
# with -malloc_limit_mb=64, and prints one summary line per target. New corpus entries and any
# crash go to FUZZ_WORK_DIR (default: a temporary directory), never into the checked-in corpus.
#
#   scripts/fuzz.sh                     # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh    # the soak run
#   scripts/fuzz.sh lsm_table log_file  # some targets
#
# cargo-fuzz needs a nightly compiler. The script uses the nightly toolchain when rustup has one;
# otherwise the stable compiler with RUSTC_BOOTSTRAP=1 (the same compiler, its unstable flags
# unlocked). If neither can build the targets it says so plainly and exits 0 with FUZZ: SKIPPED,
# so CI on a machine without them still runs every other check. A crash exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
work="${FUZZ_WORK_DIR:-$(mktemp -d)}"
mkdir -p "$work"
work=$(cd "$work" && pwd) # the targets run from fuzz/: a relative dir would point elsewhere

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
    compiler="nightly"
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    compiler="stable with RUSTC_BOOTSTRAP=1"
fi

echo "== clippy, and the seed corpus still decodes (fuzz/tests/corpus.rs)"
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --quiet -- -D warnings
cargo test --manifest-path fuzz/Cargo.toml --quiet

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && "${fuzz[@]}" list)
fi

echo "== building ${#targets[@]} fuzz targets ($compiler)"
if ! (cd fuzz && "${fuzz[@]}" build -O --debug-assertions 2>"$work/build.log"); then
    tail -20 "$work/build.log"
    echo "FUZZ: SKIPPED: the fuzz targets do not build with $compiler (log above); nothing was fuzzed"
    exit 0
fi

run_one() {
    local target=$1
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
    (cd fuzz && "${fuzz[@]}" run -O --debug-assertions "$target" \
        "$work/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -artifact_prefix="$work/artifacts/$target/" -print_final_stats=1) \
        >"$work/$target.log" 2>&1
}

echo "== fuzzing: ${seconds} s per target, two at a time; logs in $work"
failed=()
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for target in "${targets[@]:i:2}"; do
        run_one "$target" &
        pids+=("$!:$target")
    done
    for entry in "${pids[@]}"; do
        if ! wait "${entry%%:*}"; then
            failed+=("${entry#*:}")
        fi
    done
done

printf '%-16s %12s %10s %8s  %s\n' target executions exec/s corpus result
for target in "${targets[@]}"; do
    log="$work/$target.log"
    execs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
    rate=$(awk '/stat::average_exec_per_sec:/ { print $2 }' "$log" | tail -1)
    corpus=$(find "$work/corpus/$target" "fuzz/corpus/$target" -type f | wc -l)
    result=ok
    if printf '%s\n' "${failed[@]}" | grep -qx "$target"; then
        result="CRASH: $(find "$work/artifacts/$target" -type f | head -1)"
    fi
    printf '%-16s %12s %10s %8s  %s\n' "$target" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
done
if [ "${#failed[@]}" -gt 0 ]; then
    for target in "${failed[@]}"; do
        echo "== $target"
        grep -A30 -m1 "ERROR\|panicked" "$work/$target.log" || tail -30 "$work/$target.log"
    done
    echo "FUZZ: FAILED (${failed[*]})"
    exit 1
fi
echo "FUZZ: PASSED (${#targets[@]} targets, ${seconds} s each)"
