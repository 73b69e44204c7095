#!/usr/bin/env bash
# pbxsync against shared/bench/baseline.py on the same data, in the same run.
#
#   benches/compare.sh [ROWS...]          (default: 10000 100000 1000000)
#
# For each size: gen.py writes users.csv, a state that differs as a real sync would
# (5% changed, 5% new, 5% only in the state) and the device inventory. The baseline
# diffs and applies against a one-table SQLite file made by seed.py; pbxsync plans and
# applies against its own target seeded from the same state. Times are medians of 3
# runs (seconds), peak memory from /usr/bin/time. The csv crate reading users.csv
# (the floor shared/bench/README.md gives: 0.24 s at 1M on the reference machine)
# shows how fast this machine runs Rust in the same run.
#
# PostgreSQL (a second line per size; PBXSYNC_BENCH_POSTGRES=0 skips it): the same
# plans and applies against a database on the server PBXSYNC_BENCH_POSTGRES_URL names
# (default postgres://postgres@127.0.0.1:5432, a role that may create databases).
# Each size's database pbxsync_bench_seed_ROWS is seeded once from the same state and
# kept; every timed apply runs on pbxsync_bench_run, a fresh copy of it (CREATE
# DATABASE ... TEMPLATE, then a checkpoint, outside the timing). Peak memory is
# pbxsync's own, not the server's.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${PBXSYNC_SHARED_BENCH:-$here/../shared/bench}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000 1000000)
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin pbxsync --example csv_floor
bin="$here/target/release/pbxsync"
floor_bin="$here/target/release/examples/csv_floor"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Every timed command starts with no writes of an earlier one pending: the kernel
# writing back a database copied or applied just before slows whatever runs next.
wall() { sync; /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -n 1; }
# From an apply's `-v` log with "TOTAL <seconds>" appended: hashing, writing, and
# what the apply does after planning, hashing excluded (the whole run less the phases
# before hashing and less hashing).
log_hash() { awk -F': ' '/^hash / {print $2 / 1000}' <<<"$1" | tr -d ' ms'; }
log_write() { awk -F': ' '/^write to the target/ {print $2 / 1000}' <<<"$1" | tr -d ' ms'; }
log_after() {
  awk -F': ' '/^TOTAL / {split($0, t, " "); total = t[2]}
              /^hash / {hashing = 1}
              / ms$/ {ms = $NF; sub(/ ms$/, "", ms); if (hashing) {if (!done) {h = ms; done = 1}} else {planning += ms}}
              END {printf "%.3f\n", total - (planning + h) / 1000}' <<<"$1"
}
postgres=${PBXSYNC_BENCH_POSTGRES:-1}
pg_url=${PBXSYNC_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
pg_url=${pg_url%/}
pg_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$pg_url/postgres" -qAtX -v ON_ERROR_STOP=1 "$@"; }
pg_config() { # DATABASE FILE
  printf 'source:\n  path: users.csv\ntarget: %s/%s\npolicy:\n  password_hash: { m_cost_kib: 8, t_cost: 1, p_cost: 1 }\n' "$pg_url" "$1" > "$2"
}
pg_seed() { # ROWS: seed pbxsync_bench_seed_ROWS from state.csv, in the size's folder
  pg_admin -c "CREATE DATABASE pbxsync_bench_seed_$1" &&
    pg_config "pbxsync_bench_seed_$1" pg.yaml &&
    "$bin" --config pg.yaml devices import devices.csv >/dev/null &&
    "$bin" --config pg.yaml apply --file state.csv --auto-approve --quiet --allow-large-change &&
    psql "$pg_url/pbxsync_bench_seed_$1" -qAtX -v ON_ERROR_STOP=1 -c 'VACUUM ANALYZE'
}

for rows in "${sizes[@]}"; do
  work=${PBXSYNC_BENCH_DIR:-/tmp/pbxsync-bench}/$rows
  mkdir -p "$work"
  cd "$work"
  if [ ! -f users.csv ]; then
    python3 "$bench/gen.py" "$rows" users.csv state.csv --clean --devices devices.csv >/dev/null
    python3 "$bench/seed.py" state.csv baseline.db
    printf 'source:\n  path: users.csv\ntarget: sqlite:seed.db\npolicy:\n  password_hash: { m_cost_kib: 8, t_cost: 1, p_cost: 1 }\n' > pbxsync.yaml
    rm -f seed.db*
    "$bin" devices import devices.csv >/dev/null
    "$bin" apply --file state.csv --auto-approve --quiet --allow-large-change
  fi
  # The same users.csv committed, for a plan from git (the normal source).
  if [ ! -d .git ]; then
    git init -q . && git add users.csv
    git -c user.name=bench -c user.email=bench@example.com commit -qm "users.csv"
  fi
  # A target seeded by an older pbxsync is upgraded here, once, not in a timed run.
  "$bin" status >/dev/null

  # The baseline: parse+validate, then its whole plan+apply.
  base_pv=(); base_total=()
  for _ in 1 2 3; do
    cp baseline.db run.db; rm -f run.db-wal run.db-shm; sync
    out=$(python3 "$bench/baseline.py" users.csv run.db)
    base_pv+=("$(awk '$2 == "parse_validate" {print $3 / 1000}' <<<"$out")")
    base_total+=("$(awk '$2 == "total" {print $3 / 1000}' <<<"$out")")
  done
  base_pv=$(printf '%s\n' "${base_pv[@]}" | median)
  base_total=$(printf '%s\n' "${base_total[@]}" | median)

  # How fast this machine runs Rust, in the same run: the csv crate reading every
  # record (shared/bench/README.md: 0.24 s at 1M on the reference machine).
  floor=$(for _ in 1 2 3; do sync; "$floor_bin" users.csv | cut -d' ' -f2; done | median)

  # validate on its own (no config, so no target checks), like the baseline's phase.
  plain=$(mktemp -d)
  validate=$(for _ in 1 2 3; do (cd "$plain" && wall "$bin" validate --quiet --file "$work/users.csv") | cut -d' ' -f1; done | median)
  rmdir "$plain"
  plan=$(for _ in 1 2 3; do wall "$bin" plan --file users.csv --format json | cut -d' ' -f1; done | median)
  plan_mem=$(wall "$bin" plan --file users.csv --format json | cut -d' ' -f2)
  plan_git=$(for _ in 1 2 3; do wall "$bin" plan --format json | cut -d' ' -f1; done | median)
  # Pruning (the state's 5% of rows that users.csv leaves out go), the
  # whole-directory path (what --reset-passwords takes), and status (its pending
  # changes: a plan of the committed users.csv).
  plan_prune=$(for _ in 1 2 3; do wall "$bin" plan --prune --file users.csv --format json | cut -d' ' -f1; done | median)
  plan_full=$(for _ in 1 2 3; do wall env PBXSYNC_FULL_PLAN=1 "$bin" plan --file users.csv --format json | cut -d' ' -f1; done | median)
  # With the generated device inventory as the config's inventory file.
  { cat pbxsync.yaml; echo 'inventory: devices.csv'; } > inventory.yaml
  plan_inventory=$(for _ in 1 2 3; do wall "$bin" --config inventory.yaml plan --file users.csv --format json | cut -d' ' -f1; done | median)
  status=$(for _ in 1 2 3; do wall "$bin" status | cut -d' ' -f1; done | median)

  # apply: on a copy of the seeded target each time; hashing reported apart (-v).
  applies=(); hashing=(); writing=(); after=()
  for _ in 1 2 3; do
    # The target as the last apply left it: the state file and its digest index.
    rm -f run.db*; cp seed.db run.db; [ ! -f seed.db.digests ] || cp seed.db.digests run.db.digests
    sed 's/seed.db/run.db/' pbxsync.yaml > run.yaml; sync
    log=$( { /usr/bin/time -f "TOTAL %e" "$bin" --config run.yaml -v apply --file users.csv --auto-approve --quiet --allow-large-change >/dev/null; } 2>&1 )
    applies+=("$(awk '$1 == "TOTAL" {print $2}' <<<"$log")")
    hashing+=("$(log_hash "$log")")
    writing+=("$(log_write "$log")")
    after+=("$(log_after "$log")")
  done
  apply=$(printf '%s\n' "${applies[@]}" | median)
  hash=$(printf '%s\n' "${hashing[@]}" | median)
  write=$(printf '%s\n' "${writing[@]}" | median)
  after=$(printf '%s\n' "${after[@]}" | median)
  ratio() { if [ "$(echo "$2 > 0" | bc -l)" = 1 ]; then echo "scale=1; $1 / $2" | bc -l; else echo "n/a "; fi; }
  printf 'rows=%-8s validate %5ss (baseline parse+validate %6ss, %sx) | plan %5ss, %4s MB (from git %5ss; with an inventory file %5ss; pruning %5ss; whole directory %5ss; status %ss) | apply %5ss (hashing %ss, writing %ss, all after planning but hashing %ss) | baseline total %6ss, pbxsync plan+apply %sx | csv-crate floor %ss\n' \
    "$rows" "$validate" "$base_pv" "$(ratio "$base_pv" "$validate")" "$plan" "$((plan_mem / 1024))" "$plan_git" "$plan_inventory" "$plan_prune" "$plan_full" "$status" \
    "$apply" "$hash" "$write" "$after" "$base_total" "$(ratio "$base_total" "$(echo "$plan + $apply" | bc -l)")" "$floor"

  [ "$postgres" != 0 ] || continue
  # PostgreSQL: the seed database once per size (kept; seeded again only when it is
  # missing, and dropped when seeding fails), then the same plans and applies.
  seed_db=pbxsync_bench_seed_$rows
  if [ "$(pg_admin -c "SELECT count(*) FROM pg_database WHERE datname = '$seed_db'")" != 1 ]; then
    pg_seed "$rows" || { pg_admin -c "DROP DATABASE IF EXISTS $seed_db"; exit 1; }
  fi
  pg_config "$seed_db" pg.yaml
  pg_config pbxsync_bench_run pg-run.yaml
  # As for SQLite: a seed database of an older pbxsync is upgraded here, once.
  "$bin" --config pg.yaml status >/dev/null
  pg_plan=$(for _ in 1 2 3; do wall "$bin" --config pg.yaml plan --file users.csv --format json | cut -d' ' -f1; done | median)
  pg_plan_mem=$(wall "$bin" --config pg.yaml plan --file users.csv --format json | cut -d' ' -f2)
  pg_plan_git=$(for _ in 1 2 3; do wall "$bin" --config pg.yaml plan --format json | cut -d' ' -f1; done | median)
  applies=(); hashing=(); writing=(); after=()
  for _ in 1 2 3; do
    pg_admin -c "DROP DATABASE IF EXISTS pbxsync_bench_run" -c "CREATE DATABASE pbxsync_bench_run TEMPLATE $seed_db" -c CHECKPOINT
    sync
    log=$( { /usr/bin/time -f "TOTAL %e" "$bin" --config pg-run.yaml -v apply --file users.csv --auto-approve --quiet --allow-large-change >/dev/null; } 2>&1 )
    applies+=("$(awk '$1 == "TOTAL" {print $2}' <<<"$log")")
    hashing+=("$(log_hash "$log")")
    writing+=("$(log_write "$log")")
    after+=("$(log_after "$log")")
  done
  pg_admin -c "DROP DATABASE IF EXISTS pbxsync_bench_run"
  printf 'postgres rows=%-8s plan %5ss, %4s MB (from git %5ss) | apply %5ss (hashing %ss, writing %ss, all after planning but hashing %ss)\n' \
    "$rows" "$pg_plan" "$((pg_plan_mem / 1024))" "$pg_plan_git" \
    "$(printf '%s\n' "${applies[@]}" | median)" "$(printf '%s\n' "${hashing[@]}" | median)" \
    "$(printf '%s\n' "${writing[@]}" | median)" "$(printf '%s\n' "${after[@]}" | median)"
done
