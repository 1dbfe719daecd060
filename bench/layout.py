"""Regenerates crates/corral/layout/corrald.hot: the daemon's functions that run.

    python3 bench/layout.py

Why: on this kernel a read fault on the binary maps the 64 or 128 KB around
it (fault-around over the page cache's folios: bench/fault_window.py), so
one function run in such a window makes all of it count in the daemon's PSS. The code that runs in a daemon's
life is about 40% of its text, scattered over every window. build.rs puts
the functions named in corrald.hot at the start of .text, so the windows
after them are never touched.

How: for the host build and the static one (musl, when its target is
installed), builds corral in release with the layout off and a link map, runs
scenarios under `valgrind --tool=callgrind --dump-instr=yes` (start 100
services, ps, logs, restart, stop/start, reload, SIGTERM; the same with
`up -d`, wait, scale, kill and `down`; the basic example with its probes,
a oneshot and a crash loop, then `down`; last, discovery through etcd,
then through an etcd that speaks only TLS, whose functions go after all
the others, in that order), maps each
executed address to its input section through the map, and writes the
functions' symbol names: those of the first scenario first, each group in
the order the compiler laid them out. build.rs also matches them with their
hashes as globs, so the list still works after the hashes change (a version
bump, a new rustc).

A function missing from the list still works: it is laid out with the cold
code and costs the window it lands in. Rerun this after changes to the
daemon's common paths; bench/supervise.py shows the PSS.
"""
import bisect
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from certs import ETCD_FLAGS, make_certs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/corral/layout/corrald.hot")
CORRAL = os.path.join(ROOT, "target/release/corral")
POSITION = re.compile(r"^(0x[0-9a-f]+|[+-]\d+|\*)$")
# corral::process::spawn, in legacy and v0 mangling.
SPAWN = re.compile(r"6corral7process5spawn")
# A BTreeMap built from a sorted iterator fixes its right border when its
# last leaf is short: whether that runs depends on how many entries (the
# environment's variables, for one), so a profile may miss it.
BTREE_BULK = re.compile(r"btree\w*(bulk_steal_left|bulk_steal_right|move_to_slice"
                        r"|fix_right_border_of_plentiful|bulk_push)")


MUSL = "x86_64-unknown-linux-musl"


def build(tmp, target, layout=False):
    """Builds corral for `target` (None: the host's), with the layout off
    unless `layout`; returns its link map."""
    flags = ["--target", target] if target else []
    subprocess.run(["cargo", "build", "--release", *flags], cwd=ROOT, check=True)
    link_map = os.path.join(tmp, "corral.map")
    # The same crate metadata (symbol hashes) as `cargo build --release`:
    # link arguments and build-script settings are not part of it.
    env = {**os.environ} if layout else {**os.environ, "CORRAL_LAYOUT": "off"}
    subprocess.run(
        ["cargo", "rustc", "-p", "corral", "--release", *flags, "--bin", "corral", "--",
         "-C", f"link-arg=-Wl,-Map={link_map}"],
        cwd=ROOT, check=True, env=env,
    )
    global CORRAL
    CORRAL = os.path.join(ROOT, "target", *([target] if target else []), "release/corral")
    return link_map


def musl_installed():
    out = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True,
                         text=True)
    return MUSL in out.stdout.split()


def cli(work, *args, timeout=60):
    return subprocess.run([CORRAL, *args], cwd=work, capture_output=True, text=True,
                          timeout=timeout)


def running(work):
    out = cli(work, "ps").stdout
    return sum(1 for line in out.splitlines()[1:] if " running " in f" {line} ")


def under_callgrind(work, out_dir, env=None):
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--trace-children=yes",
         "--trace-children-skip=/usr/*,/bin/*,/sbin/*",
         f"--callgrind-out-file={out_dir}/cg.%p", CORRAL, "up"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def wait_for(pred, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.5)
    return False


def sleeps_scenario(tmp):
    work = os.path.join(tmp, "sleeps")
    os.makedirs(work)
    config = os.path.join(work, "corral.toml")
    services = "".join(f'[services.s{i}]\ncommand = ["sleep", "86400"]\n\n' for i in range(100))
    with open(config, "w") as f:
        f.write("[corral]\nparallel = true\n\n" + services)
    daemon = under_callgrind(work, tmp)
    if not wait_for(lambda: running(work) >= 100, 180):
        sys.exit("layout: the 100 services did not all start under valgrind")
    cli(work, "ps")
    cli(work, "ps", "--json")
    cli(work, "logs", "s1")
    cli(work, "restart", "s5")
    cli(work, "stop", "s6")
    cli(work, "start", "s6")
    with open(config, "a") as f:
        f.write('[services.added]\ncommand = ["sleep", "86400"]\n')
    cli(work, "reload")
    wait_for(lambda: running(work) >= 101, 30)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=120)


def example_scenario(tmp):
    work = os.path.join(tmp, "basic")
    os.makedirs(work)
    shutil.copy(os.path.join(ROOT, "examples/basic/corral.toml"), work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    daemon = under_callgrind(work, tmp, {"WEB_PORT": port})
    wait_for(lambda: running(work) >= 2, 120)
    time.sleep(8)  # probes, the poller's output, the crash loop's restarts
    cli(work, "ps")
    cli(work, "logs", "web")
    cli(work, "down", timeout=120)
    daemon.wait(timeout=120)


def detached_scenario(tmp):
    work = os.path.join(tmp, "detached")
    os.makedirs(work)
    services = "".join(f'[services.s{i}]\ncommand = ["sleep", "86400"]\n\n' for i in range(100))
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write("[corral]\nparallel = true\n\n" + services
                + '[services.api]\ncommand = ["sleep", "86400"]\nreplicas = 1\n')
    # `up -d` returns once every service runs; the daemon it started goes on
    # under valgrind (--trace-children) until `down`.
    up = subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--trace-children=yes",
         "--trace-children-skip=/usr/*,/bin/*,/sbin/*",
         f"--callgrind-out-file={tmp}/cg.%p", CORRAL, "up", "-d"],
        cwd=work, capture_output=True, timeout=600,
    )
    if up.returncode != 0:
        sys.exit(f"layout: up -d failed under valgrind: {up.stderr.decode()[-500:]}")
    for args in (["ps"], ["ps", "--json"], ["wait"], ["scale", "api", "3"], ["scale", "api", "1"],
                 ["logs", "-n", "5"], ["kill", "-s", "HUP", "s3"], ["restart", "s4"]):
        cli(work, *args, timeout=120)
    cli(work, "down", timeout=300)
    # `down` returns once the services stopped; the daemon, not a child of
    # this script, writes its profile as it exits.
    wait_for(lambda: daemon_dumped(tmp), 120)


def etcd_scenario(tmp):
    """Discovery through etcd over plain HTTP: what a corral with etcd runs,
    listed after the common paths and before what only TLS adds."""
    etcd_run(tmp, tls=False)


def etcd_tls_scenario(tmp):
    """Discovery through an etcd that speaks only TLS and asks for a client
    certificate: the TLS path, for users who configure it. Its functions go
    last in the list, after every common path's."""
    etcd_run(tmp, tls=True)


def etcd_run(tmp, tls):
    work = os.path.join(tmp, "etcd-tls" if tls else "etcd")
    os.makedirs(work)
    if tls:
        make_certs(work)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    scheme = "https" if tls else "http"
    client, peer = f"{scheme}://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    certs = ETCD_FLAGS if tls else []
    etcd = subprocess.Popen(
        ["etcd", "--name", "l", "--data-dir", os.path.join(work, "data"),
         "--listen-client-urls", client, "--advertise-client-urls", client,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"l={peer}", *certs],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = ', tls = { ca = "ca.pem", cert = "client.pem", key = "client.key" }' if tls else ""
    try:
        with open(os.path.join(work, "corral.toml"), "w") as f:
            f.write(f"""[discovery]
backend = "etcd"
etcd = {{ endpoints = ["{client}"], ttl = "3s"{files} }}

[services.db]
command = ["sleep", "86400"]
provides = [{{ name = "db", port = 5432 }}]

[services.app]
command = ["sleep", "86400"]
requires = ["db"]
""")
        daemon = under_callgrind(work, tmp)
        if not wait_for(lambda: running(work) >= 2, 180):
            sys.exit(f"layout: {work}: the services did not start under valgrind")
        time.sleep(5)  # keep-alives over the kept connection
        cli(work, "ps")
        cli(work, "down", timeout=120)
        daemon.wait(timeout=120)
    finally:
        etcd.kill()
        etcd.wait()


def daemon_dumped(tmp):
    """Whether a complete profile of a daemon is in `tmp` (callgrind ends
    each file with its totals)."""
    for f in glob.glob(os.path.join(tmp, "cg.*")):
        with open(f) as fh:
            text = fh.read()
        cmd = next((line for line in text[:8192].splitlines() if line.startswith("cmd:")), "")
        if cmd.split()[2:3] == ["--daemon"] and "\ntotals:" in text:
            return True
    return False


def executed(cg_file):
    """Addresses run in the daemon, from one callgrind file, or None for another process.

    The daemon is the executable started as `corrald --daemon`; valgrind
    gives it its path as argv[0], so the flag is what tells it apart."""
    objects, obj, pos, addrs, daemon = {}, None, 0, set(), False
    for line in open(cg_file):
        if line.startswith("cmd:"):
            daemon = line.split()[2:3] == ["--daemon"]
        elif line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.strip())
            if m.group(2):
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                obj = objects[m.group(1)]
        elif not line.startswith("calls="):
            first = line.split(maxsplit=1)
            if first and POSITION.match(first[0]):
                p = first[0]
                pos = int(p, 16) if p.startswith("0x") else pos + (0 if p == "*" else int(p))
                if obj and obj.endswith("/corral"):
                    addrs.add(pos)
    return addrs if daemon else None


def text_sections(link_map):
    """(address, size, input section name) of each .text input section, from
    an lld map (the host build) or a GNU ld map (the musl build links with
    the C compiler's ld, which puts a long name on a line of its own)."""
    sections, out, pending = [], None, None
    gnu_out = re.compile(r"^(\.\S+)(\s+0x[0-9a-f]+\s+0x[0-9a-f]+)?\s*$")
    gnu_in = re.compile(r"^ (\.text\.\S+)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+\S.*)?$")
    gnu_addr = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+\S")
    for line in open(link_map):
        line = line.rstrip("\n")
        m = gnu_out.match(line)
        if m:
            out, pending = m.group(1), None
            continue
        if out == ".text":
            m = gnu_in.match(line)
            if m and m.group(2):
                sections.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
                continue
            if m:
                pending = m.group(1)
                continue
            m = gnu_addr.match(line)
            if m and pending:
                sections.append((int(m.group(1), 16), int(m.group(2), 16), pending))
                pending = None
                continue
        parts = line.split(None, 5)
        if len(parts) < 5 or not re.match(r"^[0-9a-f]+$", parts[0]):
            continue
        if len(parts) == 5 and parts[4].startswith("."):
            out = parts[4].strip()
            continue
        m = re.search(r":\((\.text\.[^)]*)\)$", line.strip())
        if m and out == ".text":
            sections.append((int(parts[0], 16), int(parts[2], 16), m.group(1)))
    return sorted(s for s in sections if s[1] > 0)


def symbol(section):
    """The function's symbol name: the input section's name without `.text.`."""
    return re.sub(r"^\.text\.(unlikely\.)?", "", section)


def name_glob(name):
    """The symbol with what a rebuild changes made `*`, as build.rs does
    (crates/corral/layout/glob.rs): the legacy hash, v0 crate
    disambiguators, LTO's numbered copies."""
    stem = name.rstrip("0123456789")
    lto = None
    if len(stem) != len(name) and stem.endswith("."):
        lto = stem[:-1]
        if lto.endswith(".llvm"):
            lto = lto[:-len(".llvm")]
    base = lto if lto is not None else name
    out, i = [], 0
    while i < len(base):
        rest = base[i:]
        if (base.startswith("_ZN") and len(rest) == 20 and rest.startswith("17h")
                and all(c in "0123456789abcdefABCDEF" for c in rest[3:19]) and rest[19] == "E"):
            out.append("17h*")
            return "".join(out)
        if base.startswith("_R") and rest.startswith("Cs"):
            n = 0
            while 2 + n < len(rest) and rest[2 + n].isascii() and rest[2 + n].isalnum():
                n += 1
            if n > 0 and rest[2 + n:3 + n] == "_":
                out.append("Cs*_")
                i += 3 + n
                continue
        out.append(base[i])
        i += 1
    if lto is not None:
        out.append("*")
    return "".join(out)


def check(most):
    """How much of the code the common scenarios run the list places first,
    on a build with the layout on; exits 1 when more than `most` functions
    run outside it: each may land in a 64 KiB window of its own and make all
    of that resident (a share of bytes hides that: 0.5% of the code run,
    unlisted, cost 450 kB of PSS), so the list is stale: run this script
    without --check."""
    tmp = tempfile.mkdtemp(prefix="corral-layout-")
    listed = set()
    for line in open(OUT):
        if line.strip() and not line.startswith("#"):
            listed.add(line.strip())
            listed.add(name_glob(line.strip()))
    link_map = build(tmp, None, layout=True)
    sections = text_sections(link_map)
    starts = [sec[0] for sec in sections]
    run = set()
    for scenario in (sleeps_scenario, detached_scenario, example_scenario):
        for f in glob_files(tmp):
            os.remove(f)
        scenario(tmp)
        for f in glob_files(tmp):
            for addr in executed(f) or ():
                i = bisect.bisect_right(starts, addr) - 1
                if i >= 0 and addr < sections[i][0] + sections[i][1]:
                    run.add(i)
    first = [i for i in run
             if symbol(sections[i][2]) in listed or name_glob(symbol(sections[i][2])) in listed]
    size = lambda ids: sum(sections[i][1] for i in ids)
    share = size(first) / max(size(run), 1)
    missing = len(run) - len(first)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"layout check: {len(first)} of {len(run)} functions run are listed first, "
          f"{size(first) // 1024} of {size(run) // 1024} KiB ({share:.1%}); "
          f"{missing} run outside the list (at most {most})")
    if missing > most:
        sys.exit("layout check: the list is stale: regenerate it with `python3 bench/layout.py`")


def glob_files(tmp):
    return glob.glob(os.path.join(tmp, "cg.*"))


def main():
    if "--check" in sys.argv[1:]:
        args = sys.argv[1:]
        most = int(args[args.index("--max-missing") + 1]) if "--max-missing" in args else 4
        return check(most)
    tmp = tempfile.mkdtemp(prefix="corral-layout-")
    # What every daemon runs (both builds') first, then what only some
    # configs run: a build's own common names after another build's
    # optional ones would scatter the common path.
    order, optional, seen, totals = [], [], set(), []
    # Each build's own names (their hashes differ by target); a name of the
    # other build matches nothing exactly, and its glob the same function.
    for target in [None] + ([MUSL] if musl_installed() else []):
        work = os.path.join(tmp, target or "host")
        os.makedirs(work)
        link_map = build(work, target)
        totals.append(profile(work, link_map, order, optional, seen))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    summary = "; ".join(f"{n} functions, {run // 1024} of {text // 1024} KiB" for n, run, text in totals)
    with open(OUT, "w") as f:
        f.write(f"# Written by bench/layout.py ({rustc}): per build (host, static), "
                f"{summary} of .text run in its scenarios.\n")
        f.write("\n".join(order + optional) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {OUT}: {summary}")
    print("now: cargo build --release (the layout is on again)")


def profile(tmp, link_map, order, optional, seen):
    """Runs the scenarios on one build; appends its new names to `order`
    (those of the etcd TLS scenario to `optional`)."""
    sections = text_sections(link_map)
    starts = [s[0] for s in sections]
    count, total = 0, 0
    for scenario in (sleeps_scenario, detached_scenario, example_scenario):
        n, size = run_scenario(tmp, scenario, sections, starts, order, seen)
        count, total = count + n, total + size
    # Under valgrind clone3 fails, so a spawn takes the fork fallback; the
    # real daemon's vfork-style child runs the rest of the spawn module, in
    # corral's own memory: all of it goes in.
    spawn = [sec for sec in sections
             if SPAWN.search(sec[2]) and symbol(sec[2]) not in seen]
    for sec in spawn:
        seen.add(symbol(sec[2]))
        order.append(symbol(sec[2]))
        total += sec[1]
    count += len(spawn)
    print(f"the spawn module: {len(spawn)} more functions", file=sys.stderr)
    bulk = [sec for sec in sections
            if BTREE_BULK.search(sec[2]) and symbol(sec[2]) not in seen]
    for sec in bulk:
        seen.add(symbol(sec[2]))
        order.append(symbol(sec[2]))
        total += sec[1]
    count += len(bulk)
    print(f"BTreeMap's bulk build: {len(bulk)} more functions ({sum(s[1] for s in bulk)} bytes)",
          file=sys.stderr)
    # What only some configs run, after everything every daemon runs.
    for scenario in (etcd_scenario, etcd_tls_scenario):
        n, size = run_scenario(tmp, scenario, sections, starts, optional, seen)
        count, total = count + n, total + size
    return count, total, sum(s[1] for s in sections)


def run_scenario(tmp, scenario, sections, starts, order, seen):
    """Runs one scenario; appends the functions it ran that are not listed
    yet; returns how many and their size."""
    for f in glob.glob(os.path.join(tmp, "cg.*")):
        os.remove(f)
    scenario(tmp)
    run = set()
    for f in glob.glob(os.path.join(tmp, "cg.*")):
        for addr in executed(f) or ():
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and addr < sections[i][0] + sections[i][1]:
                run.add(i)
    new = sorted(i for i in run if symbol(sections[i][2]) not in seen)
    for i in new:
        seen.add(symbol(sections[i][2]))
        order.append(symbol(sections[i][2]))
    print(f"{scenario.__name__}: {len(run)} functions run, {len(new)} new", file=sys.stderr)
    return len(new), sum(sections[i][1] for i in new)


if __name__ == "__main__":
    main()
