#!/usr/bin/env python3
"""Discovery through etcd (Step 7), on loopback, with an etcd of its own,
then (Step 16) the same through an etcd that speaks only TLS.

  latency    provider ready (corral A) -> dependent's on-change action
             started (corral B), through etcd; change-wait 0, so no
             configured debounce is included. Median, p99, max over CHANGES.
  converge   1,000 endpoints under 50 names already in etcd: time from the
             exec of a new corral until its 50 dependents (one per name)
             all run, and that corral's PSS then
  pss        corral's PSS with 100 sleeps, local backend vs etcd configured
  tls        latency and PSS again through an etcd that speaks only TLS and
             asks for a client certificate (certificates made by openssl)

Usage: bench/etcd.py [--corral PATH] [--changes 200]
Needs etcd (Debian's etcd-server) on PATH.
"""
import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from discovery import stamps  # noqa: E402  (the sibling benchmarks' helpers)
from supervise import children, pss_kb  # noqa: E402
from certs import ETCD_FLAGS, make_certs  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The directory of the certificates when etcd speaks TLS (None: plain HTTP).
TLS = None


def start_etcd(tls=None):
    global TLS
    TLS = tls
    client, peer = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="corral-bench-etcd-")
    scheme = "https" if tls else "http"
    proc = subprocess.Popen(
        ["etcd", "--name", "b", "--data-dir", data,
         "--listen-client-urls", f"{scheme}://127.0.0.1:{client}",
         "--advertise-client-urls", f"{scheme}://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"b=http://127.0.0.1:{peer}",
         "--heartbeat-interval", "10", "--election-timeout", "100",
         *(ETCD_FLAGS if tls else [])],
        cwd=tls, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    addr = f"127.0.0.1:{client}"
    for _ in range(500):
        try:
            call(addr, "/v3/kv/range", {"key": b64("x")})
            return proc, addr
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("etcd did not start")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def call(addr, path, body):
    context = None
    if TLS:
        import ssl
        context = ssl.create_default_context(cafile=os.path.join(TLS, "ca.pem"))
        context.load_cert_chain(os.path.join(TLS, "client.pem"), os.path.join(TLS, "client.key"))
    scheme = "https" if TLS else "http"
    req = urllib.request.Request(f"{scheme}://{addr}{path}", data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=5, context=context) as r:
        return json.load(r)


def discovery(addr, host):
    if TLS:
        files = ", ".join(f'{k} = "{os.path.join(TLS, v)}"'
                          for k, v in (("ca", "ca.pem"), ("cert", "client.pem"), ("key", "client.key")))
        return (f'[discovery]\nbackend = "etcd"\nhost-id = "{host}"\n'
                f'etcd = {{ endpoints = ["https://{addr}"], ttl = "5s", tls = {{ {files} }} }}\n\n')
    return (f'[discovery]\nbackend = "etcd"\nhost-id = "{host}"\n'
            f'etcd = {{ endpoints = ["http://{addr}"], ttl = "5s" }}\n\n')


def project(config):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write(config)
    return work


def up(corral, work):
    proc = subprocess.Popen([corral, "up"], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sock = os.path.join(work, ".corral", "corral.sock")
    while not os.path.exists(sock):
        time.sleep(0.01)
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def sleeps_of(pid):
    kids = children(pid)
    n = 0
    for k in kids:
        try:
            with open(f"/proc/{k}/comm") as f:
                n += f.read().strip() == "sleep"
        except OSError:
            pass
    return n


def latency(corral, addr, changes):
    a = project(discovery(addr, "a") + """
[services.db]
command = ["sh", "-c", "date +%s%N >> ready.log; printf '\\\\n' >&3; exec sleep 3600"]
ready = { notify-fd = 3 }
provides = [{ name = "db", port = 40000 }]
stop-timeout = "1s"
""")
    b = project(discovery(addr, "b") + """
[services.app]
command = ["sleep", "3600"]
requires = ["db"]
on-change = ["sh", "-c", "date +%s%N >> action.log"]
change-wait = { min = "0ms", max = "0ms" }
""")
    pa, pb = up(corral, a), up(corral, b)
    time.sleep(1.0)
    for _ in range(changes):
        subprocess.run([corral, "restart", "db"], cwd=a, stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.05)
    time.sleep(1.0)
    stop(pa)
    stop(pb)
    ready = stamps(os.path.join(a, "ready.log"))[1:]
    actions = stamps(os.path.join(b, "action.log"))
    lat = sorted((min(x for x in actions if x >= r) - r) / 1e6
                 for r in ready if any(x >= r for x in actions))
    p99 = lat[int(len(lat) * 0.99) - 1]
    label = "latency+TLS" if TLS else "latency   "
    print(f"{label} {len(lat)} of {len(ready)} changes: provider ready (A) -> action started (B):"
          f" median {statistics.median(lat):.2f} ms, p99 {p99:.2f} ms, max {lat[-1]:.2f} ms")


def converge(corral, addr):
    for i in range(1000):
        name, inst = f"n{i % 50}", f"far:svc{i}"
        value = {"addr": f"10.0.{i // 250}.{i % 250}:80", "host": f"10.0.{i // 250}.{i % 250}",
                 "port": 80, "tags": [], "attrs": {}, "instance": inst, "host_id": "far"}
        call(addr, "/v3/kv/put", {"key": b64(f"corral/svc/{name}/{inst}"),
                                   "value": b64(json.dumps(value))})
    config = discovery(addr, "new") + "".join(
        f'[services.d{j}]\ncommand = ["sleep", "3600"]\nrequires = ["n{j}"]\n\n' for j in range(50))
    work = project(config)
    t = time.monotonic()
    proc = subprocess.Popen([corral, "up"], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while sleeps_of(proc.pid) < 50:
        time.sleep(0.002)
    took = time.monotonic() - t
    time.sleep(1.0)
    pss = pss_kb(proc.pid)
    stop(proc)
    # The next figure is about corral, not about this view: clear it.
    call(addr, "/v3/kv/deleterange", {"key": b64("corral/"), "range_end": b64("corral0")})
    print(f"converge   1,000 endpoints under 50 names: all 50 dependents running after"
          f" {took * 1e3:.0f} ms; PSS {pss} kB")


def pss_compare(corral, addr):
    sleeps = "".join(f'[services.s{i}]\ncommand = ["sleep", "86400"]\n\n' for i in range(100))
    res = {"local": [], "etcd": []}
    for _ in range(4):
        for who, config in (("local", "[corral]\nparallel = true\n\n" + sleeps),
                            ("etcd", discovery(addr, "p") + "[corral]\nparallel = true\n\n" + sleeps)):
            work = project(config)
            proc = up(corral, work)
            while sleeps_of(proc.pid) < 100:
                time.sleep(0.01)
            time.sleep(1.0)
            res[who].append(pss_kb(proc.pid))
            stop(proc)
    local, etcd = statistics.median(res["local"]), statistics.median(res["etcd"])
    label = "pss+TLS   " if TLS else "pss       "
    print(f"{label} N=100: local {local:.0f} kB, etcd configured {etcd:.0f} kB"
          f" ({etcd - local:+.0f} kB; 4 alternating rounds each)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--changes", type=int, default=200)
    args = ap.parse_args()
    corral = os.path.abspath(args.corral)
    etcd, addr = start_etcd()
    try:
        latency(corral, addr, args.changes)
        converge(corral, addr)
        pss_compare(corral, addr)
    finally:
        etcd.kill()
        etcd.wait()
    certs = tempfile.mkdtemp(prefix="corral-bench-certs-")
    make_certs(certs)
    etcd, addr = start_etcd(certs)
    try:
        latency(corral, addr, args.changes)
        pss_compare(corral, addr)
    finally:
        etcd.kill()
        etcd.wait()


if __name__ == "__main__":
    main()
