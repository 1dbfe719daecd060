#!/usr/bin/env python3
"""Log throughput benchmark: a service writes BYTES of 100-byte lines.

Runs, in the same session and on the same disk:
  cat      `linegen | cat > FILE`: the baseline, a plain pipe into a file
  file     corral up: the service's log file FILE (rotation off), console to /dev/null
  console  corral up: console only, stdout to /dev/null (no file)
and prints wall time, throughput, the ratio to the baseline and corral's peak RSS.

The output file lives in --dir (default /dev/shm when it exists), so the
figures measure corral and not the disk; runs alternate and medians are shown.

Usage: bench/logs.py [--corral PATH] [--bytes 1000000000] [--runs 3] [--dir DIR]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(argv, cwd, stdout):
    """Wall seconds and peak RSS (kB) of one command."""
    t = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - t
    if status != 0:
        raise RuntimeError(f"{argv} exited with {status}")
    return elapsed, usage.ru_maxrss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--bytes", type=int, default=1_000_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    work = tempfile.mkdtemp(prefix="corral-logbench-", dir=args.dir)
    gen = os.path.join(work, "linegen")
    subprocess.run(["cc", "-O2", "-o", gen, os.path.join(HERE, "linegen.c")], check=True)
    out = os.path.join(work, "out.log")
    with open(os.path.join(work, "file.toml"), "w") as f:
        f.write(f'[services.gen]\ncommand = ["{gen}", "{args.bytes}"]\noneshot = true\n'
                f'log = {{ file = "{out}", max-size = "100GB" }}\n')
    with open(os.path.join(work, "console.toml"), "w") as f:
        f.write(f'[services.gen]\ncommand = ["{gen}", "{args.bytes}"]\noneshot = true\n')
    results = {"cat": [], "file": [], "console": []}
    rss = {"file": 0, "console": 0}
    devnull = open(os.devnull, "w")
    for _ in range(args.runs):
        for who in results:
            if os.path.exists(out):
                os.remove(out)
            subprocess.run(["sync"])
            if who == "cat":
                secs, _ = timed(["sh", "-c", f'"{gen}" {args.bytes} | cat > "{out}"'], work, devnull)
            else:
                secs, peak = timed([corral, "up", "-f", f"{who}.toml"], work, devnull)
                rss[who] = max(rss[who], peak)
            results[who].append(secs)
    base = statistics.median(results["cat"])
    best_base = min(results["cat"])
    mb = args.bytes / 1e6
    print(f"{'who':<8} {'median s':>9} {'MB/s':>8} {'vs cat':>7} {'best s':>7} {'vs best cat':>12} {'peak RSS kB':>12}")
    for who, runs in results.items():
        med = statistics.median(runs)
        best = min(runs)
        peak = rss.get(who, "")
        print(f"{who:<8} {med:>9.3f} {mb/med:>8.0f} {base/med:>6.2f}x {best:>7.3f} {best_base/best:>11.2f}x {peak:>12}")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
