#!/usr/bin/env python3
"""Many services on one host: the everyday commands at N services.

For N services of `sleep 86400` (plus `api`, with replicas) it times, with
the CLI as a user runs it:
  up -d      from the command until it returns with every service running
  ps         the table (resource figures read from /proc for every service)
  ps --json  the same as JSON
  scale      `scale api 100`, then `scale api 1`
  reload     after one service's definition changed (one restart)
  down       until corral has stopped everything and exited
and prints the daemon's PSS and its heap (kB), and the heap per service
against a run with 100 services.

corral keeps two pipes per running service: when they would not fit under
the descriptor limit (`ulimit -n`), the services use `log.merge-stderr`
(one pipe each), which is printed; N is capped if even that does not fit.

Usage: bench/scale.py [--corral PATH] [--services 10000]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from supervise import pss_kb  # noqa: E402


def mapping_pss(pid, name):
    """PSS (kB) of one mapping of the process ([heap])."""
    total, current = 0, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and ":" not in parts[0]:
                current = parts[5] if len(parts) > 5 else ""
            elif parts[0] == "Pss:" and current == name:
                total += int(parts[1])
    return total


def timed(argv, cwd):
    t = time.monotonic()
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()[-500:]}")
    return time.monotonic() - t, out.stdout


def run(corral, n, merge):
    work = tempfile.mkdtemp(prefix=f"corral-scale-{n}-")
    log = "log = { merge-stderr = true }\n" if merge else ""
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write("[corral]\nparallel = true\n")
        for i in range(n):
            f.write(f'[services.s{i}]\ncommand = ["sleep", "86400"]\n{log}')
        f.write(f'[services.api]\ncommand = ["sleep", "86400"]\nreplicas = 1\n{log}')
    figures = {}
    figures["up -d"], _ = timed([corral, "up", "-d"], work)
    _, version = timed([corral, "ps", "--json"], work)
    pid = json.loads(subprocess.run(
        ["curl", "-s", "--unix-socket", os.path.join(work, ".corral", "corral.sock"),
         "http://corral/v1/version"], capture_output=True, text=True).stdout)["pid"]
    time.sleep(1)
    pss, heap = pss_kb(pid), mapping_pss(pid, "[heap]")
    figures["ps"], table = timed([corral, "ps"], work)
    running = sum(1 for line in table.splitlines() if " running " in line)
    figures["ps --json"], _ = timed([corral, "ps", "--json"], work)
    t1, _ = timed([corral, "scale", "api", "100"], work)
    t2, _ = timed([corral, "scale", "api", "1"], work)
    figures["scale 100, 1"] = t1 + t2
    path = os.path.join(work, "corral.toml")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("[services.s0]\n", '[services.s0]\nenv = { CHANGED = "1" }\n', 1))
    figures["reload"], _ = timed([corral, "reload"], work)
    figures["down"], _ = timed([corral, "down"], work)
    return figures, pss, heap, running


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--services", type=int, default=10000)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Room for `scale api 100` and corral's own descriptors.
    merge = args.services + 200 > (soft - 100) // 2
    fit = soft - 300 if merge else args.services
    n = min(args.services, fit)
    if merge:
        print(f"ulimit -n is {soft}: two pipes per service do not fit; "
              f"every service has log.merge-stderr (one pipe)")
    if n < args.services:
        print(f"ulimit -n is {soft}: {n} services fit, not {args.services}")
    small, small_pss, small_heap, _ = run(corral, 100, merge)
    figures, pss, heap, running = run(corral, n, merge)
    print(f"services: {n + 1} ({running} running after up -d); corral: {corral}")
    for what, secs in figures.items():
        print(f"  {what:<14} {secs:>8.2f} s   (100 services: {small[what]:.2f} s)")
    print(f"  daemon PSS     {pss:>8} kB  (100 services: {small_pss} kB)")
    print(f"  daemon heap    {heap:>8} kB  (100 services: {small_heap} kB)")
    print(f"  heap per service: {(heap - small_heap) / (n - 100) * 1024:.0f} bytes; "
          f"PSS per service: {(pss - small_pss) / (n - 100) * 1024:.0f} bytes")


if __name__ == "__main__":
    main()
