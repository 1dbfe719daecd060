#!/usr/bin/env python3
"""Supervision benchmark: corral against a bare posix_spawn loop, same run.

For N services of `sleep 86400` it measures, for each supervisor (the
baseline; `base+cg`, the baseline with a cgroup per child as corral makes,
and `corral-nc`, corral with `cgroup = false`, where cgroup v2 is writable;
corral):
  start     time from exec of the supervisor until all N sleeps run
  pss       the supervisor's own PSS (kB, /proc/PID/smaps_rollup) with N running
  restart   median time from SIGKILL of one sleep until its replacement runs
  idle      context switches of all supervisor threads over 3 idle seconds
  stop      time from SIGTERM until the supervisor exited and no sleep is left

Each figure is the median over --runs runs (baseline and corral alternate).
corral keeps two pipes per service; where they do not fit under `ulimit -n`
(10,000 services under 20,000), the services use `log.merge-stderr` (one
pipe each), and the table says so.

`--also NAME=PATH` (repeatable) adds rows for other corral builds measured in
the same rounds, e.g. the static file against the host build:
`--also static=target/x86_64-unknown-linux-musl/release/corral`.

Usage: bench/supervise.py [--corral PATH] [--also NAME=PATH]... [--sizes 10,100,1000]
                          [--restarts 20] [--runs 3] [--no-nc]
"""
import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The observer polls /proc at this interval; a busy loop would take one of the
# machine's two cores away from the supervisor and its children.
POLL = 0.0003


def children(pid):
    """pid's children. /proc lists them under the thread that created each;
    both supervisors start every process from their main thread, and this
    runs every 0.3 ms while a start is timed, so only that list is read."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def is_sleep(pid):
    """pid has exec'd sleep and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    state = stat[stat.rindex(")") + 2]
    return name == "sleep" and state != "Z"


def wait_sleeps(pid, n, timeout=120.0):
    """Waits until pid has n children running sleep; returns their pids.
    The list of children is read every POLL per 100 of them: a read takes
    the kernel's task-list lock, which every fork and exit also takes, for
    time that grows with the list (read every 0.3 ms, 10,000 children slowed
    both supervisors' start by half)."""
    known = set()
    deadline = time.monotonic() + timeout
    poll = POLL * max(1, n // 100)
    while len(known) < n:
        time.sleep(poll)
        for k in children(pid):
            if k not in known and is_sleep(k):
                known.add(k)
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(known)} of {n} sleeps running")
    return known


def wait_replacement(pid, before, timeout=10.0):
    """Waits until a sleep child that is not in `before` runs; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(POLL)
        for k in children(pid):
            if k not in before and is_sleep(k):
                return k
        if time.monotonic() > deadline:
            raise RuntimeError("no replacement started")


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return -1


def ctx_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass  # A thread that ended meanwhile (a /proc reading).
    return total


def measure(argv, n, restarts, cwd):
    out = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    known = wait_sleeps(proc.pid, n)
    out["start"] = time.monotonic() - t0
    time.sleep(0.5)
    out["pss"] = pss_kb(proc.pid)
    before = ctx_switches(proc.pid)
    time.sleep(3)
    out["idle"] = ctx_switches(proc.pid) - before
    lat = []
    for _ in range(restarts):
        victim = min(known)
        t = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        fresh = wait_replacement(proc.pid, known)
        lat.append(time.monotonic() - t)
        known.discard(victim)
        known.add(fresh)
        time.sleep(0.05)
    out["restart"] = statistics.median(lat)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # Polled every POLL, as everything else here: Popen.wait(timeout) sleeps
    # 1, 2, 4 ... 50 ms between its looks, which put an exit at 70 ms at 113.
    while proc.poll() is None:
        if time.monotonic() - t > 120:
            raise RuntimeError("the supervisor did not exit within 120 s of SIGTERM")
        time.sleep(POLL)
    while any(is_sleep(k) for k in known):
        time.sleep(POLL)
    out["stop"] = time.monotonic() - t
    return out


def own_cgroup():
    """This process's cgroup v2 directory, if the unified hierarchy is
    mounted and writable (as corral finds its own); else None."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split(" - ") for line in f]
        with open("/proc/self/cgroup") as f:
            own = next(line[3:].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    for left, right in mounts:
        if right.split(" ")[0] == "cgroup2":
            fields = left.split(" ")
            root, point = fields[3], fields[4]
            if own.startswith(root):
                path = os.path.join(point, os.path.relpath(own, root))
                return path if os.access(path, os.W_OK) else None
    return None


def corral_config(n, merge):
    lines = ['[corral]\nparallel = true\n']
    log = "log = { merge-stderr = true }\n" if merge else ""
    for i in range(n):
        lines.append(
            f'[services.s{i}]\ncommand = ["sleep", "86400"]\nrestart = "always"\n'
            f'backoff = {{ initial = "0s", max = "0s" }}\nstop-timeout = "5s"\n{log}'
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                    help="another corral build, measured in the same rounds")
    ap.add_argument("--no-nc", action="store_true", help="leave out the corral-nc row")
    args = ap.parse_args()
    also = [a.split("=", 1) for a in args.also]
    work = tempfile.mkdtemp(prefix="corral-bench-")
    baseline = os.path.join(work, "baseline")
    subprocess.run(["cc", "-O2", "-o", baseline, os.path.join(HERE, "baseline.c")], check=True)
    print(f"{'N':>5} {'who':<9} {'start ms':>9} {'PSS kB':>7} {'restart ms':>10} {'stop ms':>8} {'idle cs':>7}")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cgroup = own_cgroup()
    if cgroup is None:
        print("no writable cgroup v2 here: no base+cg row")
    for n in [int(s) for s in args.sizes.split(",")]:
        merge = 2 * n + 100 > soft
        if merge:
            print(f"{n:>5} (ulimit -n {soft}: corral's services have log.merge-stderr)")
        with open(os.path.join(work, "corral.toml"), "w") as f:
            f.write(corral_config(n, merge))
        argvs = {"baseline": ([baseline, str(n)], work)}
        if cgroup:
            argvs["base+cg"] = ([baseline, str(n), cgroup], work)
        if cgroup and not args.no_nc:
            # corral's spawn path without the cgroups' kernel work.
            nocg = os.path.join(work, "nocg")
            os.makedirs(nocg, exist_ok=True)
            with open(os.path.join(nocg, "corral.toml"), "w") as f:
                f.write(corral_config(n, merge).replace("[corral]\n", "[corral]\ncgroup = false\n", 1))
            argvs["corral-nc"] = ([args.corral, "up"], nocg)
        argvs["corral"] = ([args.corral, "up"], work)
        for name, path in also:
            argvs[name] = ([path, "up"], work)
        runs = {who: [] for who in argvs}
        for _ in range(args.runs):
            for who, (argv, cwd) in argvs.items():
                runs[who].append(measure(argv, n, args.restarts, cwd))
        res = {
            who: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for who, rs in runs.items()
        }
        for who, r in res.items():
            print(f"{n:>5} {who:<9} {r['start']*1e3:>9.1f} {r['pss']:>7.0f} {r['restart']*1e3:>10.2f} "
                  f"{r['stop']*1e3:>8.1f} {r['idle']:>7.0f}")
        pairs = [("ratio", "corral", "baseline")]
        if cgroup:
            pairs += [("vs +cg", "corral", "base+cg")]
        if "corral-nc" in res:
            pairs += [("nc ratio", "corral-nc", "baseline")]
        for name, _ in also:
            pairs += [(f"{name[:6]} r", name, "baseline"), (f"{name[:6]}/c", name, "corral")]
        for label, who, against in pairs:
            c, b = res[who], res[against]
            print(f"{n:>5} {label:<9} {c['start']/b['start']:>8.2f}x {'':>7} "
                  f"{(c['restart']-b['restart'])*1e3:>+9.2f}ms {c['stop']/b['stop']:>7.2f}x")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
