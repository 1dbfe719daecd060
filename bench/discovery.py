#!/usr/bin/env python3
"""Discovery latency: provider ready -> dependent's on-change action started.

A provider `db` becomes ready through notify-fd (it stamps the time just
before it says so); a dependent `app` requires db and runs an on-change
command that stamps the time as its first act. change-wait is 0, so the
figures exclude any configured debounce. The provider is restarted CHANGES
times with `corral restart db`; each ready stamp is paired with the first
action stamp after it.

Usage: bench/discovery.py [--corral PATH] [--changes 200]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = """
[services.db]
command = ["sh", "-c", "date +%s%N >> ready.log; printf '\\\\n' >&3; exec sleep 3600"]
ready = { notify-fd = 3 }
provides = [{ name = "db", port = 40000 }]
stop-timeout = "1s"

[services.app]
command = ["sleep", "3600"]
requires = ["db"]
on-change = ["sh", "-c", "date +%s%N >> action.log"]
change-wait = { min = "0ms", max = "0ms" }
"""


def stamps(path):
    try:
        with open(path) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--changes", type=int, default=200)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    work = tempfile.mkdtemp(prefix="corral-discobench-")
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write(CONFIG)
    daemon = subprocess.Popen([corral, "up"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(work, ".corral", "corral.sock")
    while not os.path.exists(sock):
        time.sleep(0.01)
    time.sleep(0.5)
    for _ in range(args.changes):
        subprocess.run([corral, "restart", "db"], cwd=work, stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.02)
    time.sleep(0.5)
    subprocess.run([corral, "down"], cwd=work, stdout=subprocess.DEVNULL)
    daemon.wait()
    ready = stamps(os.path.join(work, "ready.log"))[1:]  # the first start is not a change
    actions = stamps(os.path.join(work, "action.log"))
    latencies = []
    for r in ready:
        after = [a for a in actions if a >= r]
        if after:
            latencies.append((min(after) - r) / 1e6)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    print(f"changes measured: {len(latencies)} of {len(ready)}")
    print(f"provider ready -> dependent's action started: median {statistics.median(latencies):.2f} ms, "
          f"p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
