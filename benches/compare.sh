#!/usr/bin/env bash
# pbxsync against shared/bench/baseline.py, on the same data, in the same run.
# usage: benches/compare.sh [ROWS] [SHARED_BENCH_DIR]     (default 1000000 ../shared/bench)
set -euo pipefail
rows=${1:-1000000}
bench=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${PBXSYNC_BENCH_DIR:-/tmp/pbxsync-bench-$rows}
mkdir -p "$work"
cd "$work"
if [ ! -f users.csv ]; then
  python3 "$bench/gen.py" "$rows" users.csv state.csv --devices devices.csv >/dev/null
fi
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/release/pbxsync"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { # run a command 3 times, print the median wall time in seconds
  for _ in 1 2 3; do
    /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -n 1
  done | median
}

python3 "$bench/seed.py" state.csv baseline.db
base=$(for _ in 1 2 3; do
  cp baseline.db run.db
  python3 "$bench/baseline.py" users.csv run.db | awk '$2 == "parse_validate" {print $3 / 1000}'
done | median)
ours=$(seconds "$bin" validate --quiet --file users.csv)
peak=$(/usr/bin/time -f "%M" "$bin" validate --quiet --file users.csv 2>&1 >/dev/null | tail -n 1)
printf 'rows=%s  validate: pbxsync %ss (peak %s MB)  baseline parse+validate %ss  ratio %.1fx\n' \
  "$rows" "$ours" "$((peak / 1024))" "$base" "$(echo "$base / $ours" | bc -l)"
