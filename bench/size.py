#!/usr/bin/env python3
"""Binary size guard: the release binaries' sizes against bench/size-budget.txt.

On the kernels corral runs on, the code of a binary is resident in every
process that maps it, so an accidental dependency shows up in every
container's memory. This prints each binary's size (file, and text as
`size` reports it when binutils is there) against its budget, and exits 1
when one is over: a regression is seen in review, not in the test suite.

Each line of bench/size-budget.txt: NAME PATH BUDGET (PATH relative to the
repository).

Usage: cargo build --release && scripts/build-static && python3 bench/size.py
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def text_size(path):
    try:
        out = subprocess.run(["size", path], capture_output=True, text=True, check=True).stdout
        return int(out.splitlines()[1].split()[0])
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        return None


def main():
    argparse.ArgumentParser().parse_args()
    root = os.path.join(HERE, "..")
    over = False
    with open(os.path.join(HERE, "size-budget.txt")) as f:
        budgets = [line.split() for line in f if line.strip() and not line.startswith("#")]
    print(f"{'binary':<14} {'file bytes':>11} {'text bytes':>11} {'budget':>11}  verdict")
    for name, rel, budget in budgets:
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            print(f"{name:<14} missing: {rel} (cargo build --release; scripts/build-static)")
            over = True
            continue
        size = os.path.getsize(path)
        text = text_size(path)
        verdict = "ok" if size <= int(budget) else "OVER BUDGET"
        over |= size > int(budget)
        shown = f"{text:,}" if text is not None else "-"
        print(f"{name:<14} {size:>11,} {shown:>11} {int(budget):>11,}  {verdict}")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
