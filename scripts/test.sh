#!/usr/bin/env bash
# Every check a change must pass, exactly as CI runs it (.ci/run calls this script):
# system packages, formatting, clippy with warnings as errors, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the workspace needs to build, installed when missing: the rocksdb crate
# builds RocksDB's C++ and generates its bindings with libclang.
APT_PACKAGES=(clang libclang-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing system packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component"
    fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings (every feature: the RocksDB benchmarks too)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== cargo package (every crate must publish on its own)"
cargo package --workspace --locked --allow-dirty --no-verify --quiet >/dev/null

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# The facade's open() with every backend compiled in (the run above has its default features).
cargo test -p orbit-persistence --all-features --locked 2>&1 | tee -a "$log"
# One closing line for the whole run: cargo prints a result line per test binary, the last of
# which (doc tests) often counts zero tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
