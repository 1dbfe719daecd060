#!/usr/bin/env python3
"""Jobs benchmark (Step 9): N jobs on a per-second schedule for S seconds.

  cpu        corral's own CPU time (user + system, not its children's) over
             the window, against a bare C loop that posix_spawns the same N
             `true` at every whole second and reaps them (same run)
  wake-ups   corral's context switches per second, and how many fall in the
             quiet part of each second (the last 150 ms before the next
             tick, once the runs of this tick are over): the loop should
             sleep there
  idle       N jobs whose next tick is months away: wake-ups over 10 s
             (corral arms one timer per job for its next tick only, so
             this should be 0)

Usage: bench/jobs.py [--corral PATH] [--jobs 1000] [--seconds 60]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hardening import cpu_ticks, wait_socket  # noqa: E402
from supervise import ctx_switches  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def config(n, schedule):
    out = []
    for i in range(n):
        out.append(f'[services.j{i}]\ncommand = ["true"]\nschedule = "{schedule}"\n')
    return "\n".join(out)


def daemon_of(proc):
    """corral execs corrald: the same pid."""
    return proc.pid


def sample(pid, seconds):
    """(wall time, context switches) every 20 ms for `seconds`."""
    out = []
    end = time.time() + seconds
    while time.time() < end:
        out.append((time.time(), ctx_switches(pid)))
        time.sleep(0.02)
    return out


def quiet_wakeups(samples, quiet=0.15):
    """Switches seen in sample intervals lying wholly in the last `quiet`
    seconds before a whole second."""
    count = 0
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if int(t0) == int(t1) and t0 - int(t0) >= 1 - quiet:
            count += c1 - c0
    return count


def busy_span(samples):
    """Median time from each whole second to the last context switch seen
    before the next one: how long a tick keeps corral busy."""
    last = {}
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if c1 > c0 and int(t0) == int(t1):
            last[int(t1)] = t1 - int(t1)
    spans = sorted(last.values())
    return spans[len(spans) // 2] if spans else 0.0


def run_corral(corral, n, schedule, seconds, work):
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write(config(n, schedule))
    proc = subprocess.Popen([corral, "up"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_socket(os.path.join(work, ".corral", "corral.sock"))
    time.sleep(3)  # settle: first ticks, heap trimmed
    pid = daemon_of(proc)
    cpu0 = cpu_ticks(pid)
    samples = sample(pid, seconds)
    cpu = (cpu_ticks(pid) - cpu0) / TICK
    proc.terminate()
    proc.wait(timeout=60)
    return cpu, samples


def run_baseline(binary, n, seconds):
    proc = subprocess.Popen([binary, str(n), str(seconds + 2)])
    time.sleep(1.5)
    cpu0 = cpu_ticks(proc.pid)
    time.sleep(seconds)
    cpu = (cpu_ticks(proc.pid) - cpu0) / TICK
    proc.kill()
    proc.wait()
    return cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    n, s = args.jobs, args.seconds
    with tempfile.TemporaryDirectory() as work:
        baseline = os.path.join(work, "jobs_baseline")
        subprocess.run(["cc", "-O2", "-o", baseline, os.path.join(HERE, "jobs_baseline.c")],
                       check=True)
        base_cpu = run_baseline(baseline, n, s)
        cpu, samples = run_corral(corral, n, "* * * * * *", s, os.path.join(work, "tick"))
        _, idle = run_corral(corral, n, "0 0 1 1 *", 10, os.path.join(work, "idle"))
    switches = samples[-1][1] - samples[0][1]
    span = samples[-1][0] - samples[0][0]
    print(f"{n} jobs, every second, {s} s (2 cores; baseline: posix_spawn loop, same run)")
    print(f"  cpu        corral {cpu:.2f} s ({100 * cpu / s:.1f}%), baseline {base_cpu:.2f} s "
          f"({100 * base_cpu / s:.1f}%), ratio {cpu / max(base_cpu, 1e-9):.2f}x; "
          f"{1e6 * cpu / (n * s):.0f} us per run")
    print(f"  wake-ups   {switches / span:.0f}/s while ticking; a tick keeps corral busy "
          f"{1000 * busy_span(samples):.0f} ms (median); in the last 150 ms before "
          f"each tick: {quiet_wakeups(samples)} in {s} s")
    print(f"  idle       {idle[-1][1] - idle[0][1]} wake-ups in 10 s with {n} jobs not due")


if __name__ == "__main__":
    main()
