"""A/B of the daemon's PSS at N=100: alternates two corral binaries, 8 rounds.

    python3 bench/pss_ab.py [--exercise] OLD_BINARY NEW_BINARY

Each round starts `corral up` on 100 `sleep 86400` services (a config it
writes in a temp dir), waits until all run, reads Pss from smaps_rollup,
stops it. With --exercise, the daemon first serves what an operator does
in a day (ps, ps --json, logs, restart, stop and start, a reload that adds
a service), so code that runs only then counts too.

Before each round the binaries' pages are dropped from the page cache
(posix_fadvise DONTNEED), so corrald is read from disk at exec, as in a
container that just started: how much of the binary one fault maps depends
on how its pages came into the cache (bench/fault_window.py). Medians of alternating rounds cancel most of the machine's drift,
which moves single runs by +-40 kB.
"""
import subprocess, time, sys, os, statistics, signal
def pss(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"): return int(line.split()[1])
def sleeps(pid):
    n=0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st=open(f"/proc/{d}/stat").read()
                if f") S {pid} " in st or f") R {pid} " in st:
                    if open(f"/proc/{d}/comm").read().strip()=="sleep": n+=1
            except Exception: pass
    return n
import tempfile
WORK=tempfile.mkdtemp()
cfg="[corral]\nparallel = true\n\n"+"".join(f'[services.s{i}]\ncommand = ["sleep", "86400"]\n\n' for i in range(100))
open(os.path.join(WORK,"corral.toml"),"w").write(cfg)
exercise="--exercise" in sys.argv
binaries=[a for a in sys.argv[1:] if a!="--exercise"]
def from_disk(b):
    for path in (b, os.path.join(os.path.dirname(b), "corrald")):
        if os.path.exists(path):
            fd=os.open(path,os.O_RDONLY)
            os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)
            os.close(fd)
def day(b):
    run=lambda *a: subprocess.run([b,*a],cwd=WORK,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    for args in (["ps"],["ps","--json"],["logs","s1"],["restart","s5"],["stop","s6"],["start","s6"]): run(*args)
    with open(os.path.join(WORK,"corral.toml"),"a") as f: f.write('[services.added]\ncommand = ["sleep", "86400"]\n')
    run("reload")
    open(os.path.join(WORK,"corral.toml"),"w").write(cfg)
res={b:[] for b in binaries}
for r in range(8):
    for b in binaries:
        from_disk(b)
        p=subprocess.Popen([b,"up"],cwd=WORK,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
        t=time.time()
        while sleeps(p.pid)<100 and time.time()-t<10: time.sleep(0.05)
        if exercise: day(b)
        time.sleep(1.0)
        res[b].append(pss(p.pid))
        p.send_signal(signal.SIGTERM); p.wait()
for b,v in res.items(): print(b, sorted(v), "median", statistics.median(v))
