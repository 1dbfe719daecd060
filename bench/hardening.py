#!/usr/bin/env python3
"""Hardening benchmark (Step 8): corral under hostile clients and after a SIGKILL.

  followers  RSS of the daemon before, at the peak during, and after 1,000
             clients that follow the logs and never read, beside a service
             printing ~5,000 lines/s (baseline: the RSS before)
  emfile     CPU of the daemon over 3 s with 200 idle clients under
             nofile=128, against the same daemon's CPU with no client
  leftovers  time for `corral down` to stop what a SIGKILLed run left (K
             double-forked sleeps), with cgroups and without, against a bare
             SIGTERM of the same pids and waiting for them to go

Usage: bench/hardening.py [--corral PATH] [--followers 1000] [--idle 200] [--leftovers 50]
"""
import argparse
import os
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_socket(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"no socket at {path}")


def start(corral, work, config, prefix=()):
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write(config)
    proc = subprocess.Popen([*prefix, corral, "up"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(work, ".corral", "corral.sock")
    wait_socket(sock)
    return proc, sock


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def followers(corral, n):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    proc, sock = start(corral, work, """
[services.chatty]
command = ["sh", "-c", "while :; do seq 1 500; sleep 0.1; done"]
""")
    time.sleep(2)
    before = rss_kb(proc.pid)
    clients = []
    request = b"GET /v1/logs?follow=true HTTP/1.1\r\nHost: corral\r\n\r\n"
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(sock)
        s.sendall(request)
        clients.append(s)
    peak = before
    t = time.monotonic()
    while time.monotonic() - t < 15:
        peak = max(peak, rss_kb(proc.pid))
        time.sleep(0.1)
    for s in clients:
        s.close()
    time.sleep(3)
    after = rss_kb(proc.pid)
    stop(proc)
    print(f"followers  {n} non-reading log followers, ~5,000 lines/s")
    print(f"           RSS kB before {before}  peak {peak}  after {after}"
          f"  (after/before {after / before:.2f}x)")


def emfile(corral, n):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    proc, sock = start(corral, work, '[services.a]\ncommand = ["sleep", "86400"]\n',
                       prefix=("prlimit", "--nofile=128:128"))
    time.sleep(1)
    c0 = cpu_ticks(proc.pid)
    time.sleep(3)
    quiet = cpu_ticks(proc.pid) - c0
    clients = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        clients.append(s)
    time.sleep(0.3)
    c0 = cpu_ticks(proc.pid)
    time.sleep(3)
    busy = cpu_ticks(proc.pid) - c0
    t = time.monotonic()
    ps = subprocess.run([corral, "ps"], cwd=work, capture_output=True)
    ps_ms = (time.monotonic() - t) * 1e3
    for s in clients:
        s.close()
    stop(proc)
    pct = lambda ticks: 100.0 * ticks / TICK / 3
    print(f"emfile     {n} idle clients, nofile=128")
    print(f"           CPU {pct(busy):.1f}% (no clients {pct(quiet):.1f}%);"
          f" `corral ps` meanwhile {ps_ms:.0f} ms, exit {ps.returncode}")


def marked(tag):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(tag.encode()):
                    out.append(int(pid))
        except OSError:
            pass
    return out


def gone(pids):
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except OSError:
            pass
    return True


def leave_behind(corral, work, k, cgroup, tag):
    """Runs a service that double-forks k sleeps, SIGKILLs corral; returns their pids."""
    config = f"""
[corral]
cgroup = {"true" if cgroup else "false"}

[services.forker]
command = ["bash", "-c", "for i in $(seq {k}); do (setsid bash -c 'exec -a {tag} sleep 86400' &); done; echo forked; sleep 86400"]
"""
    proc, _ = start(corral, work, config)
    deadline = time.monotonic() + 20
    while len(marked(tag)) < k:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(marked(tag))} of {k} leftovers started")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return marked(tag)


def leftovers(corral, k):
    print(f"leftovers  {k} double-forked sleeps left by a SIGKILLed corral")
    for cgroup in (True, False):
        work = tempfile.mkdtemp(prefix="corral-bench-")
        tag = f"corral-bench-leftover-{os.getpid()}-{int(cgroup)}"
        pids = leave_behind(corral, work, k, cgroup, tag)
        record = open(os.path.join(work, ".corral", "corral.run")).read()
        t = time.monotonic()
        down = subprocess.run([corral, "down"], cwd=work, capture_output=True, text=True)
        took = time.monotonic() - t
        left = [p for p in pids if not gone([p])]
        # Baseline: the same kind of leftovers, stopped by hand.
        base_work = tempfile.mkdtemp(prefix="corral-bench-")
        base_pids = leave_behind(corral, base_work, k, cgroup, tag + "-base")
        t = time.monotonic()
        for pid in base_pids:
            os.kill(pid, signal.SIGTERM)
        while not gone(base_pids):
            time.sleep(0.001)
        base = time.monotonic() - t
        # Its run record and empty cgroup go now.
        subprocess.run([corral, "down"], cwd=base_work, capture_output=True)
        how = "cgroup" if "cgroup " in record else "marker"
        print(f"           {how:<7} down {took * 1e3:7.1f} ms (kill loop {base * 1e3:6.1f} ms,"
              f" {took / base:5.1f}x), left {len(left)}, exit {down.returncode}:"
              f" {down.stdout.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--followers", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--leftovers", type=int, default=50)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    followers(corral, args.followers)
    emfile(corral, args.idle)
    leftovers(corral, args.leftovers)


if __name__ == "__main__":
    main()
