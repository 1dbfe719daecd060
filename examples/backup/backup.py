"""The periodic base backup: fetches a dump from the database server and
writes it atomically as backups/base-<time>.sql, keeping the newest KEEP."""
import os
import socket
import time

port = int(os.environ.get("DB_PORT", "5433"))
target = os.environ.get("BACKUP_DIR", "backups")
keep = int(os.environ.get("BACKUP_KEEP", "5"))

os.makedirs(target, exist_ok=True)
with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
    chunks = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
dump = b"".join(chunks)
name = os.path.join(target, f"base-{time.time():.3f}.sql")
with open(name + ".part", "wb") as f:
    f.write(dump)
    f.flush()
    os.fsync(f.fileno())
os.rename(name + ".part", name)
rows = dump.count(b"\n")
for line in dump.decode().splitlines()[-3:]:
    print(f"  last rows: {line}")
print(f"base backup {name}: {rows} rows, {len(dump)} bytes", flush=True)
old = sorted(f for f in os.listdir(target) if f.startswith("base-") and f.endswith(".sql"))
for stale in old[:-keep]:
    os.remove(os.path.join(target, stale))
