#!/usr/bin/env bash
# Do two builds of pbxsync say the same thing? Byte for byte, on the example
# repository and on generated data.
#
#   benches/compare_outputs.sh OLD_BIN NEW_BIN [ROWS]     (ROWS: default 10000)
#
# Each binary runs the same sequence of commands in a directory of its own:
# validate (clean and with errors, text and JSON), plan (text, JSON, Markdown),
# apply, export, history (the list and one apply, text and JSON) and status,
# before and after an everyday change, and on gen.py's data (a generated file
# with its ~0.8% of errors, then a clean one planned and applied against a
# seeded target). Commits are made with a fixed author and date, so commit ids
# agree. stdout, stderr and the exit code of every command are compared after
# masking only what must differ between two runs: times, durations, the
# temporary directory, and the pid/host of a lock. Exits 1 on any difference
# and prints the diffs; 0 when every output is the same.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,16p "$0"; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); rows=${3:-10000}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${PBXSYNC_SHARED_BENCH:-$here/../shared/bench}
work=$(mktemp -d /tmp/pbxsync-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT

export NO_COLOR=1 USER=compare LOGNAME=compare TZ=UTC
export GIT_AUTHOR_NAME="Example Admin" GIT_AUTHOR_EMAIL=admin@example.com
export GIT_COMMITTER_NAME="Example Admin" GIT_COMMITTER_EMAIL=admin@example.com
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
unset PBXSYNC_TARGET PBXSYNC_FULL_PLAN

commit() { # commit MESSAGE DATE: every change in the current directory
  git add -A
  GIT_AUTHOR_DATE="$2" GIT_COMMITTER_DATE="$2" git commit -qm "$1"
}

# run NAME ARGS...: pbxsync ARGS in the current directory, its stdout, stderr and
# exit code kept as $out/NAME.{out,err,rc}.
run() {
  local name=$1; shift
  set +e
  "$bin" "$@" >"$out/$name.out" 2>"$out/$name.err" </dev/null
  echo $? >"$out/$name.rc"
  set -e
}

# The whole sequence, for one binary.
sequence() {
  bin=$1; side=$2
  out=$work/$side/out; mkdir -p "$out"

  # The example repository.
  cp -r "$here/examples/company" "$work/$side/company"
  cd "$work/$side/company"
  printf '.pbxsync/\n' >.gitignore
  git init -q . && commit "Example Company" "2026-01-05T09:00:00Z"
  run ex-validate validate
  run ex-validate-json validate --format json
  run ex-plan plan
  run ex-plan-json plan --format json
  run ex-plan-md plan --format markdown
  run ex-apply apply --auto-approve
  run ex-plan-none plan
  run ex-export export
  run ex-status status
  run ex-status-json status --format json
  # An everyday change: a description, a new colleague, a device moved.
  sed -i -e 's/Managing director/Managing director (Berlin)/' \
    -e 's/^\(1006,.*\),0004F2A10006$/\1,/' -e 's/^\(1008,.*\),$/\1,0004F2A10006/' users.csv
  echo '1012,Omar,Farah,ofarah,Omar_Farah_78,Sales,omar.farah@example.com,,,0004F2A10030' >>users.csv
  commit "Aisha joins" "2026-02-10T10:30:00Z"
  run ex2-plan plan
  run ex2-plan-json plan --format json
  run ex2-plan-md plan --format markdown
  run ex2-status status
  run ex2-apply-json apply --auto-approve --format json
  run ex2-export export
  run ex2-history history
  run ex2-history-json history --format json
  run ex2-history-md history --format markdown
  run ex2-history-1 history 1
  run ex2-history-2-json history 2 --format json
  run ex2-history-missing history 99
  # Someone leaves: pruned.
  sed -i '/^1009,/d' users.csv
  commit "Elena leaves" "2026-02-10T11:00:00Z"
  run ex2-prune-plan plan --prune
  run ex2-prune-plan-json plan --prune --format json
  run ex2-prune-apply apply --auto-approve --prune
  run ex2-prune-export export
  # A CSV with errors, committed and in the working tree.
  printf '1001,Jason,Flynn,jflynn,short,,bad-mail,,,0004f2a10001\n1001,Dup,Row,dup,,,,,,\n' >>users.csv
  run ex3-validate validate
  run ex3-validate-json validate --format json
  commit "Broken rows" "2026-02-11T08:00:00Z"
  run ex3-plan plan
  run ex3-plan-json plan --format json
  run ex3-apply apply --auto-approve

  # Generated data: gen.py's file with its errors.
  mkdir -p "$work/$side/gen" && cd "$work/$side/gen"
  python3 "$bench/gen.py" "$rows" dirty.csv >/dev/null
  python3 "$bench/gen.py" "$rows" users.csv state.csv --clean --devices devices.csv >/dev/null
  printf 'state.db*\n' >.gitignore
  printf 'source:\n  path: users.csv\ntarget: sqlite:state.db\npolicy:\n  password_hash: { m_cost_kib: 8, t_cost: 1, p_cost: 1 }\n' >pbxsync.yaml
  run gen-validate-dirty validate --file dirty.csv
  run gen-validate-dirty-json validate --file dirty.csv --format json
  run gen-devices devices import devices.csv
  run gen-seed apply --file state.csv --auto-approve --allow-large-change --format json
  git init -q . && commit "users.csv" "2026-03-01T12:00:00Z"
  run gen-plan plan --allow-large-change
  run gen-plan-json plan --allow-large-change --format json
  run gen-plan-md plan --allow-large-change --format markdown
  run gen-plan-prune-json plan --allow-large-change --prune --format json
  run gen-status-json status --format json
  run gen-apply apply --auto-approve --allow-large-change
  run gen-plan-none plan
  run gen-export export
  run gen-history history
  run gen-history-json history --format json
  run gen-history-2 history 2
  run gen-history-2-json history 2 --format json
  run gen-status status
}

sequence "$old" old
sequence "$new" new

# Mask what must differ between two runs, in place.
mask() {
  sed -E -i \
    -e "s#$work/(old|new)#WORK#g" \
    -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})/TIME/g' \
    -e 's/[0-9]+(\.[0-9]+)? ?(ns|µs|us|ms|s)\b/DURATION/g' \
    -e 's/pid [0-9]+ on host [^ ]+/pid PID on host HOST/g' \
    "$@"
}
mask "$work"/old/out/* "$work"/new/out/*
# History commit dates are fixed above, but the apply times are masked; a
# difference left is a difference in what pbxsync says.
if diff -r -u "$work/old/out" "$work/new/out"; then
  echo "compare_outputs: $(ls "$work/old/out" | wc -l) outputs of $(ls "$work/old/out" | sed 's/\..*//' | sort -u | wc -l) commands are the same"
else
  echo "compare_outputs: the outputs differ" >&2
  exit 1
fi
