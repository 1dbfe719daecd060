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
  wide       (Step 20) RSS with 512 stalled followers of a service writing
             64 KB lines, against the RSS before
  events     (Step 20) events an `events --json` client received (and was
             told it missed) during `down` of 1,000 services, against the
             2,000 said (stopping, stopped)
  jobs       (Step 20) 1,000 jobs due in the same second: runs with a "run
             ended" in their ring, against 1,000
  reload     (Step 20) the slowest of /v1/services answers during a reload
             of 20,000 services (a profile not run), against the reload's time
  scrapes    (Step 20) metrics scrapes answered with 16 idle connections
             open, and with 50 scrapers at once, against the scrapes made

Usage: bench/hardening.py [--corral PATH] [--followers 1000] [--idle 200] [--leftovers 50]
                          [--only NAME,...]
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


def api_get(sock, path):
    """One request on the control socket: (status, body)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def wide(corral, n=512, size=65000):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    # size 0: a service that writes nothing (what the connections alone cost).
    loop = "sys.stdout.write(line)" if size else "time.sleep(1)"
    proc, sock = start(corral, work, f"""
[services.wide]
command = ["python3", "-c", "import sys, time\\nline = 'x' * {size} + '\\\\n'\\nwhile True: {loop}"]
""")
    time.sleep(1)
    before = rss_kb(proc.pid)
    clients = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b"GET /v1/logs?follow=true&n=0 HTTP/1.1\r\nHost: corral\r\n\r\n")
        clients.append(s)
    peak = before
    t = time.monotonic()
    while time.monotonic() - t < 8:
        peak = max(peak, rss_kb(proc.pid))
        time.sleep(0.1)
    for s in clients:
        s.close()
    stop(proc)
    print(f"wide       {n} stalled followers of {size}-byte lines: RSS kB before {before}, "
          f"peak {peak} (+{(peak - before) / 1024:.1f} MB)")


def events(corral, n=1000):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    config = "[corral]\nparallel = true\n" + "".join(
        f'[services.s{i}]\ncommand = ["sleep", "600"]\nstop-timeout = "2s"\n' for i in range(n))
    proc, sock = start(corral, work, config)
    subprocess.run([corral, "wait", "--timeout", "60s"], cwd=work, stdout=subprocess.DEVNULL)
    # The client's output goes to a file: a pipe nobody reads until `down`
    # returns would stall the client, and what a stalled client has not
    # taken when corral exits is lost with it.
    with tempfile.TemporaryFile() as sink:
        client = subprocess.Popen([corral, "events", "--json"], cwd=work, stdout=sink)
        # Time for the client to start and subscribe (what comes before is not its).
        time.sleep(2)
        subprocess.run([corral, "down"], cwd=work, stdout=subprocess.DEVNULL)
        client.wait(timeout=60)
        proc.wait(timeout=60)
        sink.seek(0)
        out = sink.read()
    import json
    lines = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    said = sum(1 for e in lines if e.get("service") and e["message"].startswith(("stopping", "stopped")))
    missed = sum(e.get("missed", 0) for e in lines if e.get("kind") == "lagged")
    print(f"events     down of {n} services: {said} of {2 * n} stop events received, "
          f"{missed} missed and counted")


def jobs(corral, n=1000):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    config = "".join(
        f'[services.j{i}]\ncommand = ["true"]\nschedule = "* * * * * *"\n' for i in range(n))
    proc, sock = start(corral, work, config)
    time.sleep(3.5)
    subprocess.run([corral, "stop", "--all"], cwd=work, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    body = subprocess.run([corral, "logs", "--json", "-n", "1000000"], cwd=work,
                          capture_output=True).stdout
    import json
    ended = set()
    started = set()
    for line in body.decode().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        if "run ended" in e["line"]:
            ended.add(e["service"])
        if "run started" in e["line"]:
            started.add(e["service"])
    stop(proc)
    print(f"jobs       {n} jobs every second: {len(started)} with a run started, "
          f"{len(ended)} with a run ended in their ring")


def reload(corral, n=20000):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    good = '[services.steady]\ncommand = ["sleep", "600"]\n'
    proc, sock = start(corral, work, good)
    big = good + "".join(
        f'[services.later{i}]\ncommand = ["sleep", "600"]\nenv = {{ N = "{i}" }}\nprofiles = ["later"]\n'
        for i in range(n))
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write(big)
    t0 = time.monotonic()
    r = subprocess.Popen([corral, "reload"], cwd=work, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    worst = 0.0
    answers = 0
    while r.poll() is None:
        t = time.monotonic()
        api_get(sock, "/v1/services")
        worst = max(worst, time.monotonic() - t)
        answers += 1
        time.sleep(0.01)
    took = time.monotonic() - t0
    stop(proc)
    print(f"reload     reload of {n} services took {took * 1000:.0f} ms; {answers} answers "
          f"meanwhile, the slowest {worst * 1000:.1f} ms")


def scrapes(corral):
    import threading
    work = tempfile.mkdtemp(prefix="corral-bench-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc, sock = start(corral, work, f'[corral]\nmetrics = "127.0.0.1:{port}"\n'
                       '[services.a]\ncommand = ["sleep", "600"]\n')
    time.sleep(0.5)

    def scrape():
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            c.close()
            return data.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    t = time.monotonic()
    ok_idle = sum(scrape() for _ in range(40))
    idle_took = time.monotonic() - t
    for c in idle:
        c.close()
    results = []
    lock = threading.Lock()

    def crowd():
        for _ in range(200):
            good = scrape()
            with lock:
                results.append(good)

    threads = [threading.Thread(target=crowd) for _ in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop(proc)
    print(f"scrapes    with 16 idle connections: {ok_idle} of 40 answered ({idle_took:.1f} s); "
          f"50 scrapers at once: {sum(results)} of {len(results)} answered")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--followers", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--leftovers", type=int, default=50)
    ap.add_argument("--wide-bytes", type=int, default=65000,
                    help="wide: the length of the service's lines (0: it writes none)")
    ap.add_argument("--only", default="followers,emfile,leftovers,wide,events,jobs,reload,scrapes")
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    only = args.only.split(",")
    if "followers" in only:
        followers(corral, args.followers)
    if "emfile" in only:
        emfile(corral, args.idle)
    if "leftovers" in only:
        leftovers(corral, args.leftovers)
    if "wide" in only:
        wide(corral, size=args.wide_bytes)
    for name, run in [("events", events), ("jobs", jobs),
                      ("reload", reload), ("scrapes", scrapes)]:
        if name in only:
            run(corral)


if __name__ == "__main__":
    main()
