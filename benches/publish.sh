#!/usr/bin/env bash
# What publishing adds to an apply (SPEC 10: the Kamailio relation at most 10%
# more; provisioning files for 100k devices at most 2 s, only changed files
# written), on the data of benches/compare.sh.
#
#   benches/publish.sh [ROWS...]          (default: 100000 1000000)
#
# For each size, on compare.sh's seeded SQLite target (run compare.sh first, or
# this script seeds it the same way): the apply of users.csv (5% changed, 5% new)
# without `publish`, with `publish.kamailio` only, and with both, each on a fresh
# copy of the seeded state (median of RUNS, default 3; seconds). With
# provisioning, every device's file is first written into an empty folder by
# `pbxsync provision` (timed, once), and before each apply the folder is brought
# back to the seeded state (untimed), so that the apply writes only what changed
# (counted). Then `provision` again with nothing changed. The folder is
# `provision/` beside the data (PBXSYNC_PROVISION_DIR picks another, e.g. on
# tmpfs, to tell the file system's cost from pbxsync's).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${PBXSYNC_SHARED_BENCH:-$here/../shared/bench}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin pbxsync
bin="$here/target/release/pbxsync"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wall() { sync; /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -n 1; }

for rows in "${sizes[@]}"; do
  work=${PBXSYNC_BENCH_DIR:-/tmp/pbxsync-bench}/$rows
  mkdir -p "$work"
  cd "$work"
  if [ ! -f seed.db ]; then
    [ -f users.csv ] || python3 "$bench/gen.py" "$rows" users.csv state.csv --clean --devices devices.csv >/dev/null
    printf 'source:\n  path: users.csv\ntarget: sqlite:seed.db\npolicy:\n  password_hash: { m_cost_kib: 8, t_cost: 1, p_cost: 1 }\n' > pbxsync.yaml
    "$bin" devices import devices.csv >/dev/null
    "$bin" apply --file state.csv --auto-approve --quiet --allow-large-change
  fi
  "$bin" status >/dev/null   # upgrades an older seed once, untimed
  base='source:\n  path: users.csv\ntarget: sqlite:run.db\npolicy:\n  password_hash: { m_cost_kib: 8, t_cost: 1, p_cost: 1 }\n'
  printf "$base" > none.yaml
  printf "${base}publish:\n  kamailio: { domain: pbx.example.com }\n" > kamailio.yaml
  pdir=${PBXSYNC_PROVISION_DIR:-provision}
  printf "${base}publish:\n  kamailio: { domain: pbx.example.com }\n  provision: { dir: $pdir, server: pbx.example.com }\n" > both.yaml
  fresh() { rm -rf run.db* "$pdir"; cp seed.db run.db; [ ! -f seed.db.digests ] || cp seed.db.digests run.db.digests; }
  apply() { wall "$bin" --config "$1" apply --file users.csv --auto-approve --quiet --allow-large-change; }
  none=(); kam=(); both=()
  for _ in $(seq 1 "${RUNS:-3}"); do
    fresh; none+=("$(apply none.yaml)")
    fresh; "$bin" --config kamailio.yaml provision >/dev/null; kam+=("$(apply kamailio.yaml)")
  done
  # Every device's file into an empty folder, once.
  fresh; full=$(wall "$bin" --config both.yaml provision)
  files=$(ls "$pdir" | wc -l)
  for _ in $(seq 1 "${RUNS:-3}"); do
    # The folder as the seeded state has it (untimed), then the apply.
    rm -f run.db*; cp seed.db run.db; [ ! -f seed.db.digests ] || cp seed.db.digests run.db.digests
    "$bin" --config both.yaml provision >/dev/null
    both+=("$(apply both.yaml)")
  done
  noop=$(for _ in 1 2 3; do wall "$bin" --config both.yaml provision; done | median)
  # What the apply wrote and removed, untimed.
  rm -f run.db*; cp seed.db run.db; [ ! -f seed.db.digests ] || cp seed.db.digests run.db.digests
  "$bin" --config both.yaml provision >/dev/null
  changed=$("$bin" --config both.yaml apply --file users.csv --auto-approve --allow-large-change --format json |
    python3 -c 'import json,sys; f=json.load(sys.stdin)["published"]["files"]; print(len(f["written"]), "written,", len(f["removed"]), "removed")')
  m() { printf '%s\n' "$@" | median; }
  printf 'rows=%-8s apply %ss | with publish.kamailio %ss | with kamailio and provisioning %ss | provision of all %s files into an empty folder %ss | provision with nothing changed %ss | files the apply wrote or removed: %s\n' \
    "$rows" "$(m "${none[@]}")" "$(m "${kam[@]}")" "$(m "${both[@]}")" "$((files - 1))" "$full" "$noop" "$changed"
done
