#!/usr/bin/env python3
"""`corral top` benchmark: what watching costs the daemon, and how fast a
change shows.

With N services of `sleep 86400` (default 100) it measures:
  pss        the daemon's PSS (kB) without a client, then with one `corral
             top` attached (median and max of readings 1 s apart; top reads
             resource figures every 2 s)
  wake-ups   context switches of all daemon threads over 5 s with no client
             (must be 0), then over 10 s with top attached
  latency    time from a state change (a stop request) to the change showing
             in top's screen, read with tmux capture-pane; the baseline in the
             same run is a raw /v1/events client seeing the same change
             (median and p99 over --changes changes)

The screen is polled every --poll seconds (each capture-pane is a fork and
exec of tmux, about 2-4 ms here): a latency figure includes up to one poll
period. Needs tmux.

Usage: bench/top.py [--corral PATH] [--services 100] [--changes 40]
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from supervise import ctx_switches, pss_kb  # noqa: E402


def request(sock_path, method, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data


class EventClient(threading.Thread):
    """A raw /v1/events client: when each (service, state) was first seen."""

    def __init__(self, sock_path):
        super().__init__(daemon=True)
        self.seen = {}
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock_path)
        self.sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")

    def run(self):
        buf = b""
        while chunk := self.sock.recv(65536):
            now = time.monotonic()
            buf += chunk
            for m in re.finditer(rb"\{[^\n]*\}\n", buf):
                try:
                    e = json.loads(m.group(0))
                except ValueError:
                    continue
                self.seen.setdefault((e.get("service"), e.get("state")), now)
            buf = buf[buf.rfind(b"\n") + 1:]


class Tmux:
    def __init__(self, work, command, env):
        self.sock = os.path.join(work, "tmux.sock")
        subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", "new-session", "-d",
                        "-x", "200", "-y", "60", command], cwd=work, env=env, check=True)

    def screen(self):
        return subprocess.run(["tmux", "-S", self.sock, "capture-pane", "-p"],
                              capture_output=True, text=True).stdout

    def pane_pid(self):
        out = subprocess.run(["tmux", "-S", self.sock, "display", "-p", "#{pane_pid}"],
                             capture_output=True, text=True).stdout
        return int(out.strip())

    def close(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True)


def row_state(screen, name):
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == name and len(cells) > 1:
            return cells[1]
    return None


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--changes", type=int, default=40)
    ap.add_argument("--poll", type=float, default=0.002)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    work = tempfile.mkdtemp(prefix="corral-top-bench-")
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write("[corral]\nparallel = true\n")
        for i in range(args.services):
            f.write(f'[services.s{i}]\ncommand = ["sleep", "86400"]\n')
    sock = os.path.join(work, "corral.sock")
    daemon = subprocess.Popen([corral, "up", "--socket", sock], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmux = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = request(sock, "GET", "/v1/services").split(b"\r\n\r\n", 1)[1]
                states = [s["state"] for s in json.loads(body)["services"]]
                if states.count("running") == args.services:
                    break
            except (OSError, ValueError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("services did not start")
            time.sleep(0.1)
        time.sleep(1)
        alone = []
        for _ in range(5):
            alone.append(pss_kb(daemon.pid))
            time.sleep(1)
        before = ctx_switches(daemon.pid)
        time.sleep(5)
        idle_alone = ctx_switches(daemon.pid) - before

        env = dict(os.environ, TERM="xterm-256color")
        tmux = Tmux(work, f"{corral} top --socket {sock}", env)
        deadline = time.monotonic() + 10
        while row_state(tmux.screen(), "s0") != "running":
            if time.monotonic() > deadline:
                raise RuntimeError("top did not show the table:\n" + tmux.screen())
            time.sleep(0.1)
        time.sleep(3)
        watched = []
        before = ctx_switches(daemon.pid)
        for _ in range(10):
            watched.append(pss_kb(daemon.pid))
            time.sleep(1)
        idle_watched = ctx_switches(daemon.pid) - before

        events = EventClient(sock)
        events.start()
        time.sleep(0.5)
        top_lat, raw_lat = [], []
        visible = min(args.changes, 30)  # rows that fit on the screen
        for k in range(args.changes):
            name = f"s{k % visible}"
            t0 = time.monotonic()
            request(sock, "POST", f"/v1/services/{name}/stop?wait=false")
            deadline = t0 + 10
            while row_state(tmux.screen(), name) not in ("stopping", "stopped"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} never showed as stopped")
                time.sleep(args.poll)
            top_lat.append(time.monotonic() - t0)
            seen = events.seen.get((name, "stopping")) or events.seen.get((name, "stopped"))
            if seen is not None:
                raw_lat.append(seen - t0)
            events.seen.clear()
            request(sock, "POST", f"/v1/services/{name}/start")
            time.sleep(0.2)

        print(f"services: {args.services}; corral: {corral}")
        print(f"{'':<28} {'median':>9} {'max/p99':>9}")
        print(f"{'daemon PSS kB, no client':<28} {statistics.median(alone):>9.0f} {max(alone):>9.0f}")
        print(f"{'daemon PSS kB, top attached':<28} {statistics.median(watched):>9.0f} {max(watched):>9.0f}")
        print(f"{'PSS ratio (top / none)':<28} {statistics.median(watched) / statistics.median(alone):>8.3f}x")
        print(f"wake-ups of the daemon: {idle_alone} in 5 s with no client; {idle_watched} in 10 s with top attached")
        print(f"{'change -> raw event client':<28} {statistics.median(raw_lat) * 1e3:>7.1f}ms {pct(raw_lat, 99) * 1e3:>7.1f}ms")
        print(f"{'change -> shown in top':<28} {statistics.median(top_lat) * 1e3:>7.1f}ms {pct(top_lat, 99) * 1e3:>7.1f}ms")
        print(f"(screen polled every {args.poll * 1e3:.0f} ms plus a capture-pane; {len(top_lat)} changes)")
    finally:
        if tmux:
            tmux.close()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
