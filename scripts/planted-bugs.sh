#!/usr/bin/env bash
# Shows that each row of docs/reliability.md can fail: plants one known bug at a time in the source
# (a classic storage-engine mistake per row), runs that row's test, expects it to FAIL, and puts
# the source back. Prints one line per row: CAUGHT or MISSED. Run by hand after changing a
# harness; it is not part of CI (each plant rebuilds). A plant whose source line has moved is
# reported as STALE: update its pattern below.
#
#   scripts/planted-bugs.sh          # every row
#   scripts/planted-bugs.sh D E      # some rows
#
# Builds go to their own target dir, so a soak run's test binaries are never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${PLANTED_TARGET_DIR:-/var/cache/orbit-persistence/target-planted}"
export ORBIT_KILL9_CYCLES=20 ORBIT_POWER_LOSS_SEEDS=1000
log_dir=$(mktemp -d)

# plant ROW FILE OLD NEW DESCRIPTION -- TEST COMMAND...
plant() {
    local row=$1 file=$2 old=$3 new=$4 what=$5
    shift 6
    if [ "${#rows[@]}" -gt 0 ] && [[ " ${rows[*]} " != *" $row "* ]]; then
        return
    fi
    cp "$file" "$log_dir/original"
    if ! python3 - "$file" "$old" "$new" <<'EOF'; then
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(1)
open(path, "w").write(text.replace(old, new))
EOF
        echo "$row STALE: the line to plant '$what' is not in $file"
        return
    fi
    if "$@" >"$log_dir/$row.log" 2>&1; then
        echo "$row MISSED: $what (log: $log_dir/$row.log)"
        missed=1
    else
        local why
        why=$( (grep -m1 -h -A1 "panicked at" "$log_dir/$row.log" || grep -m1 -h "FAILED\|ERROR" "$log_dir/$row.log") | tail -1 | cut -c1-160)
        echo "$row CAUGHT: $what -> $why"
    fi
    cp "$log_dir/original" "$file"
}

rows=("$@")
missed=0
t=(cargo test --locked -q)

plant A crates/orbit-persistence-core/src/wal.rs \
    '    if !records.is_empty() {
        report.record(RecoveryAction::Replayed {' \
    '    records.pop();
    if !records.is_empty() {
        report.record(RecoveryAction::Replayed {' \
    "WAL replay drops the last record" -- \
    "${t[@]}" -p orbit-persistence-lsm --test conformance defaults::kill9_acknowledged_writes_survive

# B and C share one plant: the directory fsync after a WAL segment is created.
segment_synced='        file.sync_data()?;
        fs.sync_dir(parent_dir(path))?;
        Ok(LogWriter {'
segment_unsynced='        file.sync_data()?;
        Ok(LogWriter {'
for row in B C; do
    test_name=acknowledged_writes_survive_power_loss
    [ "$row" = C ] && test_name=every_crash_point
    plant "$row" crates/orbit-persistence-core/src/log.rs "$segment_synced" "$segment_unsynced" \
        "no directory fsync after creating a WAL segment" -- \
        "${t[@]}" -p orbit-persistence-cowbtree --test power_loss "$test_name"
done

plant D crates/orbit-persistence-core/src/log.rs \
    '    pub fn sync(&self) -> OrbitResult<()> {
        self.file.sync_data()
    }' \
    '    pub fn sync(&self) -> OrbitResult<()> {
        self.file.sync_data().or_else(|_| self.file.sync_data())
    }' \
    "a failed fdatasync is retried (fsyncgate)" -- \
    "${t[@]}" -p orbit-persistence-cowbtree --test power_loss every_io_error

plant E crates/orbit-persistence-cowbtree/src/page.rs \
    '    if stored != actual {' \
    '    if stored != actual && false {' \
    "page CRC not checked" -- \
    "${t[@]}" -p orbit-persistence-cowbtree --test snapshots_and_corruption every_file

plant F crates/orbit-persistence-core/src/change.rs \
    '    if count > (bytes.len() - 5) / MIN_CHANGE_LEN {' \
    '    if count > (bytes.len() - 5) / MIN_CHANGE_LEN && false {' \
    "a WAL record's change count allocates unchecked" -- \
    env FUZZ_SECONDS=30 scripts/fuzz.sh wal_changes

plant G crates/orbit-persistence-memory/src/shard.rs \
    '            refs.remove(r);
            if refs.is_empty() {' \
    '            if refs.is_empty() {' \
    "remove leaves the node index entry" -- \
    "${t[@]}" -p orbit-persistence-memory --test conformance model_based_random_operations

plant H crates/orbit-persistence-core/src/rules.rs \
    '        Some(held) if !held.is_expired(now) => Err(held.clone()),' \
    '        Some(held) if !held.is_expired(now) && held.expires_at.0 > now.0 + 5 => {
            Err(held.clone())
        }' \
    "acquire takes over a lease 5 ms before it expires" -- \
    "${t[@]}" -p orbit-persistence-memory --test conformance linearizable_under_contention

plant I crates/orbit-persistence-core/src/lock.rs \
    '        match file.try_lock() {' \
    '        match Ok::<(), std::fs::TryLockError>(()) {' \
    "the data directory is not locked" -- \
    "${t[@]}" -p orbit-persistence-cowbtree --test conformance second_open_is_locked

plant J crates/orbit-persistence-core/src/wal.rs \
    '        if replay.valid_len == 0 && (sealed || seq == start || !is_last) {' \
    '        if replay.valid_len == 0 && (sealed || !is_last) {' \
    "an emptied WAL segment that the meta page names is read as a crash while creating it" -- \
    "${t[@]}" -p orbit-persistence-cowbtree --test snapshots_and_corruption every_file

exit "$missed"
