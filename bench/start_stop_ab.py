"""A/B of two corral builds: start and stop of N services, alternating rounds.

    python3 bench/start_stop_ab.py [--services 1000] [--rounds 8] OLD_CORRAL NEW_CORRAL

Each round runs `corral up` on N `sleep 86400` services (supervise.py's
config: parallel, restart always, backoff 0) in a temp dir, times the start
(until corral's main thread has N children: each has exec'd, as corral
spawns vfork-style), waits 1 s, then times SIGTERM until corral has exited
(polled every 0.3 ms). Prints the medians and each round's figures: on this
shared 2-core machine single runs move by +-15%, alternating medians much
less, so a change is judged here before supervise.py compares it with the
posix_spawn baseline.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from supervise import POLL, children, corral_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("corral", nargs="+")
    args = ap.parse_args()
    args.corral = [os.path.abspath(b) for b in args.corral]
    work = tempfile.mkdtemp(prefix="corral-ab-")
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write(corral_config(args.services, False))
    figures = {b: ([], []) for b in args.corral}
    for _ in range(args.rounds):
        for binary in args.corral:
            t = time.monotonic()
            proc = subprocess.Popen([binary, "up"], cwd=work,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while len(children(proc.pid)) < args.services:
                if time.monotonic() - t > 120:
                    proc.kill()
                    sys.exit(f"{binary}: not {args.services} children within 120 s")
                time.sleep(POLL)
            start = time.monotonic() - t
            time.sleep(1)
            t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while proc.poll() is None:
                time.sleep(POLL)
            figures[binary][0].append(start * 1e3)
            figures[binary][1].append((time.monotonic() - t) * 1e3)
            time.sleep(0.5)
    for binary, (starts, stops) in figures.items():
        print(f"{binary}: start {statistics.median(starts):.1f} ms, stop "
              f"{statistics.median(stops):.1f} ms (medians of {args.rounds})")
        print(f"  starts {[round(x) for x in starts]}")
        print(f"  stops  {[round(x) for x in stops]}")


if __name__ == "__main__":
    main()
