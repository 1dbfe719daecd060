"""A service that speaks sd_notify as the tests tell it to.

Each argument is a step, run in order:
  send:TEXT      a datagram to NOTIFY_SOCKET ("\\n" separates assignments)
  sleep:SECONDS  print:TEXT  env:NAME (prints NAME=value)
  big:N          a STATUS= datagram of N + 7 bytes
  raw:HEX        a datagram of these bytes
  pet:SECONDS    WATCHDOG=1 every SECONDS, for ever
  flood          STATUS= messages as fast as it can, for ever
  fork:SECONDS   fork; the child makes its own session and runs the next
                 steps; the parent sends MAINPID=child, waits, and exits
  wait           sleep for ever
"""
import os
import socket
import sys
import time

address = os.environ.get("NOTIFY_SOCKET", "")
if address.startswith("@"):
    address = "\0" + address[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def send(data):
    sock.sendto(data if isinstance(data, bytes) else data.encode(), address)


steps = sys.argv[1:]
i = 0
while i < len(steps):
    kind, _, arg = steps[i].partition(":")
    i += 1
    if kind == "send":
        send(arg.replace("\\n", "\n"))
    elif kind == "sleep":
        time.sleep(float(arg))
    elif kind == "print":
        print(arg, flush=True)
    elif kind == "env":
        print(f"{arg}={os.environ.get(arg)}", flush=True)
    elif kind == "big":
        send(b"STATUS=" + b"x" * int(arg))
    elif kind == "raw":
        send(bytes.fromhex(arg))
    elif kind == "pet":
        while True:
            send("WATCHDOG=1")
            time.sleep(float(arg))
    elif kind == "flood":
        n = 0
        while True:
            try:
                send(f"STATUS=flood {n}")
            except OSError:
                pass
            n += 1
    elif kind == "fork":
        child = os.fork()
        if child == 0:
            os.setsid()
            continue
        send(f"MAINPID={child}")
        time.sleep(float(arg or "0.3"))
        os._exit(0)
    elif kind == "wait":
        while True:
            time.sleep(3600)
    else:
        sys.exit(f"notifier.py: unknown step {kind!r}")
