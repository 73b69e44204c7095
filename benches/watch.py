#!/usr/bin/env python3
"""`pbxsync watch`: how long from `git commit` to applied for a one-row change, and
how much CPU a quiet watcher spends per poll (SPEC section 10).

    benches/watch.py [ROWS...]        (default: 10000 1000000)

For each size: gen.py writes a users.csv, which is committed and applied (not
timed). A release `pbxsync watch --format json` (debounce 500 ms, the default;
poll every second) then follows the repository: five commits each change one
row's email, and the time from the end of `git commit` to the watcher's `applied`
record is taken. Then the watcher is left alone for 20 s and its CPU time (user +
system, /proc) is divided by the polls it made.
"""
import csv
import io
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.environ.get("PBXSYNC_SHARED_BENCH", os.path.join(HERE, "..", "shared", "bench"))
BIN = os.path.join(HERE, "target", "release", "pbxsync")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
QUIET_SECONDS = 20


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def change_one_row(path, i):
    """The Email of the row on line i + 2 (a row without quoted line breaks)."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    cells = next(csv.reader([lines[1 + i].decode()]))
    cells[6] = f"watch{time.monotonic_ns()}@example.org"
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    lines[1 + i] = out.getvalue().encode()
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))


def run(rows):
    work = os.path.join(os.environ.get("PBXSYNC_BENCH_DIR", "/tmp/pbxsync-bench"), f"watch-{rows}")
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    os.chdir(work)
    subprocess.run([sys.executable, os.path.join(BENCH, "gen.py"), str(rows), "users.csv",
                    "state.csv", "--clean", "--devices", "devices.csv"],
                   check=True, stdout=subprocess.DEVNULL)
    with open("pbxsync.yaml", "w") as f:
        f.write("source: {path: users.csv}\ninventory: devices.csv\n"
                "policy: {password_hash: {m_cost_kib: 8, t_cost: 1, p_cost: 1}}\n"
                "safety: {max_change_percent: 100}\n"
                "watch: {debounce_ms: 500, poll_seconds: 1, auto_apply: always}\n")
    with open(".gitignore", "w") as f:
        f.write(".pbxsync/\nstate.csv\n")
    subprocess.run(["git", "init", "-q", "."], check=True)
    subprocess.run(GIT + ["add", "-A"], check=True)
    subprocess.run(GIT + ["commit", "-qm", "users"], check=True)
    subprocess.run([BIN, "apply", "--auto-approve", "--quiet"], check=True)

    watcher = subprocess.Popen([BIN, "watch", "--format", "json"], stdout=subprocess.PIPE, text=True)
    try:
        measure(rows, watcher)
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)


def measure(rows, watcher):

    def next_event(kinds):
        for line in watcher.stdout:
            event = json.loads(line)
            if event["event"] in kinds:
                return event
        raise SystemExit("the watcher stopped")

    next_event({"in_sync"})
    latencies = []
    for i in range(5):
        change_one_row("users.csv", i)
        subprocess.run(GIT + ["commit", "-qam", f"change {i}"], check=True)
        start = time.monotonic()
        event = next_event({"applied", "failed", "skipped", "locked"})
        latencies.append(time.monotonic() - start)
        assert event["event"] == "applied", event
        assert event["summary"]["total"] == 1, event
    time.sleep(1)
    before = cpu_seconds(watcher.pid)
    time.sleep(QUIET_SECONDS)
    quiet = cpu_seconds(watcher.pid) - before
    latencies.sort()
    print(f"{rows:>9} rows: commit to applied median {latencies[2]:.2f} s "
          f"(min {latencies[0]:.2f}, max {latencies[-1]:.2f}; debounce 0.5 s); "
          f"quiet watcher {quiet * 1000 / QUIET_SECONDS:.1f} ms CPU per poll "
          f"({quiet:.2f} s over {QUIET_SECONDS} polls of 1 s)")


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(HERE, "Cargo.toml"), "--bin", "pbxsync"], check=True)
    for rows in [int(a) for a in sys.argv[1:]] or [10_000, 1_000_000]:
        run(rows)


if __name__ == "__main__":
    main()
