"""A stand-in for a database server: it appends a row every 0.2 s and, to
every client that connects, sends a dump of all rows (as a base backup
tool would fetch one), then closes the connection."""
import os
import socket
import sys
import threading
import time

port = int(os.environ.get("DB_PORT", "5433"))
rows = []
lock = threading.Lock()


def write_rows():
    n = 0
    while True:
        n += 1
        with lock:
            rows.append(f"{n}\t{time.time():.3f}\tevent {n}")
        time.sleep(0.2)


threading.Thread(target=write_rows, daemon=True).start()
server = socket.create_server(("127.0.0.1", port), reuse_port=False)
print(f"db: accepting connections on 127.0.0.1:{port}", flush=True)
while True:
    conn, _ = server.accept()
    with lock:
        dump = "\n".join(rows) + "\n"
    with conn:
        conn.sendall(dump.encode())
    print(f"db: sent a dump of {dump.count(chr(10))} rows", flush=True)
    sys.stdout.flush()
