#!/usr/bin/env python3
"""The protocols servers speak: what held sockets, start-first updates and
sd_notify readiness give, measured against their absence in the same run.

1. Requests failed during restarts of a real server (gunicorn from Debian's
   python3-gunicorn, 2 sync workers) under a steady load (2 client threads,
   a new connection per request), `corral restart web` RESTARTS times:
     - held + start-first: `sockets` and `update = "start-first"`;
     - held, stop-first: `sockets`, the default update;
     - not held: gunicorn binds the port itself (`-b`), stop-first.
2. Readiness to a dependent's start: the provider stamps the time and says
   READY=1 (sd_notify), or opens its port (a tcp probe, interval 50ms);
   its dependent (depends-on ready) stamps its start. Each of ROUNDS
   rounds stops both, then asks for the dependent, then the provider.
3. corral's CPU while a service floods its notify socket (STATUS= as fast
   as it can), against the same config without the flood; and how many
   times a crash-looping service beside it was restarted meanwhile.

Usage: bench/protocols.py [--corral PATH] [--restarts 20] [--rounds 50]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NOTIFIER = os.path.join(HERE, "..", "crates", "corral", "tests", "programs", "notifier.py")

APP = """
import os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("ok %s\\n" % os.getpid()).encode()]
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    def __init__(self, corral, config, files=()):
        self.corral = corral
        self.work = tempfile.mkdtemp(prefix="corral-protobench-")
        with open(os.path.join(self.work, "corral.toml"), "w") as f:
            f.write(config)
        for name, text in files:
            with open(os.path.join(self.work, name), "w") as f:
                f.write(text)
        self.proc = subprocess.Popen([corral, "up"], cwd=self.work,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = os.path.join(self.work, ".corral", "corral.sock")
        while not os.path.exists(sock):
            time.sleep(0.01)

    def run(self, *args):
        return subprocess.run([self.corral, *args], cwd=self.work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    def wait_up(self):
        subprocess.run([self.corral, "wait", "--timeout", "30s"], cwd=self.work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def post(self, path):
        """A request to the control API, answered at once (no wait)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(os.path.join(self.work, ".corral", "corral.sock"))
            s.sendall(f"POST /v1{path} HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            while s.recv(4096):
                pass

    def path(self, name):
        return os.path.join(self.work, name)

    def close(self):
        self.run("down")
        self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def request(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.startswith(b"HTTP/1.") and b" 200 " in data and b"\r\n\r\nok " in data
    except OSError:
        return False


def under_load(port, action):
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            good = request(port)
            with lock:
                counts["ok" if good else "failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(2)]
    start = time.monotonic()
    for t in threads:
        t.start()
    action()
    stop.set()
    for t in threads:
        t.join()
    return counts["ok"], counts["failed"], counts["ok"] / (time.monotonic() - start)


def restarts(corral, restarts, held, start_first):
    port = free_port()
    gunicorn = '"/usr/bin/python3", "-m", "gunicorn", "--workers", "2", "--graceful-timeout", "5"'
    if held:
        command = f'[{gunicorn}, "app:app"]'
        extra = f'sockets = ["tcp://127.0.0.1:{port}"]\n'
    else:
        command = f'[{gunicorn}, "-b", "127.0.0.1:{port}", "app:app"]'
        extra = ""
    if start_first:
        extra += 'update = "start-first"\n'
    config = f"""
[services.web]
command = {command}
notify = true
stop-timeout = "6s"
{extra}"""
    d = Daemon(corral, config, [("app.py", APP)])
    d.wait_up()

    def act():
        for _ in range(restarts):
            d.run("restart", "web")

    ok, failed, rate = under_load(port, act)
    d.close()
    return ok, failed, rate


def stamps(path):
    try:
        with open(path) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


PROVIDER = """
import os, socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "tcp":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
with open("ready.log", "a") as f:
    f.write("%d\\n" % time.time_ns())
if mode == "tcp":
    s.listen(16)
else:
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.sendto(b"READY=1", "\\0" + os.environ["NOTIFY_SOCKET"][1:])
while True:
    time.sleep(3600)
"""


def readiness(corral, rounds, notify):
    port = free_port()
    if notify:
        provider = f"""command = ["python3", "provider.py", "notify", "{port}"]
notify = true"""
    else:
        provider = f"""command = ["python3", "provider.py", "tcp", "{port}"]
ready = {{ tcp = "127.0.0.1:{port}", interval = "50ms" }}"""
    config = f"""
[services.provider]
{provider}
stop-timeout = "1s"

[services.dependent]
command = ["sh", "-c", "date +%s%N >> start.log; exec sleep 3600"]
depends-on = {{ provider = "ready" }}
stop-timeout = "1s"
"""
    d = Daemon(corral, config, [("provider.py", PROVIDER)])
    d.wait_up()
    for _ in range(rounds):
        d.run("stop", "dependent", "provider")
        # The dependent is asked first: it starts when the provider is ready.
        d.post("/services/dependent/start?wait=false")
        d.post("/services/provider/start?wait=false")
        d.wait_up()
        time.sleep(0.05)
    ready = stamps(d.path("ready.log"))
    started = stamps(d.path("start.log"))
    d.close()
    gaps = []
    for r in ready:
        after = [s for s in started if s >= r]
        if after:
            gaps.append((min(after) - r) / 1e6)
    gaps.sort()
    return gaps


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(corral, seconds, flooding):
    steps = '"send:READY=1", "flood"' if flooding else '"send:READY=1", "wait"'
    config = f"""
[services.talker]
command = ["python3", "notifier.py", {steps}]
notify = true

[services.crashy]
command = ["sh", "-c", "sleep 0.1; exit 3"]
backoff = {{ initial = "20ms", max = "20ms" }}
"""
    with open(NOTIFIER) as f:
        d = Daemon(corral, config, [("notifier.py", f.read())])
    time.sleep(1)
    start_cpu, start = cpu_of(d.proc.pid), time.monotonic()
    t = time.monotonic()
    d.run("ps")
    ps_ms = (time.monotonic() - t) * 1000
    time.sleep(seconds)
    share = (cpu_of(d.proc.pid) - start_cpu) / (time.monotonic() - start)
    out = subprocess.run([corral, "ps"], cwd=d.work, capture_output=True, text=True).stdout
    restarts = next((int(line.split()[4]) for line in out.splitlines() if line.startswith("crashy")), -1)
    d.close()
    return share, restarts, ps_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--flood-seconds", type=float, default=5)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)

    print(f"1. requests during {args.restarts} restarts of gunicorn (2 clients, a connection each):")
    print(f"   {'case':26} {'answered':>9} {'failed':>7} {'req/s':>6}")
    for name, held, first in [("held + start-first", True, True),
                              ("held, stop-first", True, False),
                              ("not held (gunicorn -b)", False, False)]:
        ok, failed, rate = restarts(corral, args.restarts, held, first)
        print(f"   {name:26} {ok:9} {failed:7} {rate:6.0f}")

    print(f"2. provider ready -> dependent started, {args.rounds} restarts:")
    for name, notify in [("READY=1 (sd_notify)", True), ("tcp probe, 50ms", False)]:
        gaps = readiness(corral, args.rounds, notify)
        if gaps:
            p99 = gaps[max(0, int(len(gaps) * 0.99) - 1)]
            print(f"   {name:22} median {statistics.median(gaps):7.2f} ms  p99 {p99:7.2f} ms  (n={len(gaps)})")

    print(f"3. corral's CPU over {args.flood_seconds:.0f}s, a service flooding its notify socket:")
    for name, flooding in [("quiet", False), ("flood", True)]:
        share, restarts_seen, ps_ms = flood(corral, args.flood_seconds, flooding)
        print(f"   {name:6} corral CPU {share * 100:5.1f}% of a core; crash-looping neighbour "
              f"restarted {restarts_seen} times; ps answered in {ps_ms:.0f} ms")


if __name__ == "__main__":
    main()
