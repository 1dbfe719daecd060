#!/usr/bin/env python3
"""Config load benchmark (Step 18): `corral check` of 1,000 services.

The config has what Step 18 changed the reading of: `${...}` with defaults
in commands and env values (only what the baseline reads too), an env-file
per ten services (quoted and unquoted values, comments), a project `.env`
whose values refer to each other, and (second figure) a job schedule per
ten services, for which `check` now also prints the next three runs. The
same config is checked by a baseline binary (BASE, e.g. a build of the
commit before the change) and by corral, alternating, and the medians are
compared.

Usage: bench/config_load.py BASE [--corral PATH] [--services 1000] [--runs 15]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def project(n, jobs):
    work = tempfile.mkdtemp(prefix="corral-bench-")
    with open(os.path.join(work, ".env"), "w") as f:
        f.write("# project settings\nHOST=db.internal\nPORT_BASE=5432\n"
                "URL=postgres://${HOST}:${PORT_BASE}/app\nMODE=\"production\" # a note\n")
    for i in range(0, n, 10):
        with open(os.path.join(work, f"s{i}.env"), "w") as f:
            f.write(f"# service {i}\nexport NAME=s{i}\nGREETING=\"hello\\tworld\"\n"
                    "LITERAL='${NOT_EXPANDED}'\nEMPTY=\n")
    lines = ["[corral]\nparallel = true\n"]
    for i in range(n):
        lines.append(f"[services.s{i}]\n")
        if jobs and i % 10 == 0 and i:
            lines.append('command = ["true"]\nschedule = "*/5 * * * *"\n')
        else:
            lines.append(f'command = ["sleep", "${{SLEEP:-600}}", "${{URL}}", "${{MODE:-m{i}}}"]\n')
        lines.append(f'env = {{ INDEX = "{i}", WHERE = "${{URL:-none}}/{i}" }}\n')
        lines.append(f'env-file = "s{i - i % 10}.env"\n')
    with open(os.path.join(work, "corral.toml"), "w") as f:
        f.write("".join(lines))
    return work


def check_ms(corral, work):
    t = time.monotonic()
    out = subprocess.run([corral, "check"], cwd=work, capture_output=True, env={"PATH": os.environ["PATH"]})
    elapsed = (time.monotonic() - t) * 1000
    if out.returncode != 0:
        raise SystemExit(f"{corral} check failed: {out.stderr.decode()[:500]}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--corral", default=os.path.join(HERE, "..", "target", "release", "corral"))
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    binaries = {"base": os.path.abspath(args.base), "corral": os.path.abspath(args.corral)}
    for jobs in (False, True):
        work = project(args.services, jobs)
        times = {name: [] for name in binaries}
        for name, path in binaries.items():
            check_ms(path, work)  # warm the page cache
        for _ in range(args.runs):
            for name, path in binaries.items():
                times[name].append(check_ms(path, work))
        base = statistics.median(times["base"])
        mine = statistics.median(times["corral"])
        what = f"{args.services // 10 - 1} of them jobs" if jobs else "no job"
        print(f"check of {args.services} services ({what}), median of {args.runs}: "
              f"base {base:.1f} ms, corral {mine:.1f} ms, ratio {mine / base:.2f}")

if __name__ == "__main__":
    main()
