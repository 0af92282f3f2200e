#!/usr/bin/env bash
# Every check a change must pass, exactly as CI runs it (.ci/run calls this script):
# system packages, formatting, clippy with warnings as errors, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the workspace needs to build and test, installed when missing: the rocksdb
# crate builds RocksDB's C++ and generates its bindings with libclang; the etcd crate's client
# compiles etcd's protobuf files with protoc, and its tests run real etcd members; the module
# layering check is a Python script; the exporter's test checks a real scrape with Prometheus's
# own promtool (package prometheus).
APT_PACKAGES=(clang libclang-dev protobuf-compiler etcd-server python3 prometheus)
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
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

echo "== module layering (no import cycle between the modules of a crate)"
python3 scripts/check-module-cycles.py

echo "== cargo build: every crate, every feature, every test target"
# The out dir of librocksdb-sys's build script, where RocksDB's C++ library was just compiled.
rocksdb_out=$(cargo test --workspace --all-features --locked --no-run \
        --message-format=json-render-diagnostics |
    grep '"reason":"build-script-executed","package_id":"[^"]*librocksdb-sys' |
    grep -o '"out_dir":"[^"]*"' | cut -d'"' -f4 | tail -1 || true)

echo "== cargo clippy -D warnings (every feature: the RocksDB benchmarks too)"
# Cargo fingerprints a check build's build scripts apart from a normal build's, so clippy would
# compile RocksDB's C++ a second time (13 minutes on a cold cache) just to type-check bindings it
# never links. Point it at the library the build above made instead.
if [ -n "$rocksdb_out" ] && [ -f "$rocksdb_out/librocksdb.a" ]; then
    export ROCKSDB_LIB_DIR="$rocksdb_out" ROCKSDB_STATIC=1
    if [ -f "$rocksdb_out/libsnappy.a" ]; then
        export SNAPPY_LIB_DIR="$rocksdb_out" SNAPPY_STATIC=1
    fi
fi
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== cargo doc -D warnings (the docs users read on docs.rs: no broken or private links)"
# Reuses clippy's check build of the dependencies (same features, same RocksDB library).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked
unset ROCKSDB_LIB_DIR ROCKSDB_STATIC SNAPPY_LIB_DIR SNAPPY_STATIC

echo "== cargo package (every crate must publish on its own)"
cargo package --workspace --locked --allow-dirty --no-verify --quiet >/dev/null

echo "== cargo test (every feature: the facade opens every backend)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# docs/reliability.md row A in CI: 100 kill -9 cycles per disk backend.
ORBIT_KILL9_CYCLES="${ORBIT_KILL9_CYCLES:-100}" cargo test --workspace --all-features --locked 2>&1 | tee "$log"
# One closing line for the whole run: cargo prints a result line per test binary, the last of
# which (doc tests) often counts zero tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
