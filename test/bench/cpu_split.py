#!/usr/bin/env python3
"""Runs one pgbench command and says where the machine's CPU went.

    cpu_split.py SECS -- pgbench ...

Prints one line: tps, then CPU microseconds per transaction spent in the
database backends, in pgbench, in the flint_keys log worker, and in every
other process, from /proc/<pid>/stat (utime + stime) sampled over the
middle of the run (the first and last second are left out: connection
start-up and shutdown). With CPU_SPLIT_OTHERS=1 it also names, on stderr,
the other processes that used the most (autovacuum, checkpointer, ...).
"""
import os
import re
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def classify(cmdline):
    if "pgbench" in cmdline:
        return "pgbench"
    if "flint_keys log worker" in cmdline:
        return "worker"
    if cmdline.startswith("postgres: ") and " flint " in cmdline:
        return "backends"
    return "other"


def snapshot():
    seen = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        seen[pid] = (classify(cmdline), int(fields[11]) + int(fields[12]), cmdline)
    return seen


def main():
    secs = int(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    window = max(secs - 2, 1)
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    before = snapshot()
    time.sleep(window)
    after = snapshot()
    out, _ = run.communicate()
    if run.returncode != 0:
        sys.stderr.write(out)
        sys.exit(1)
    tps = float(re.search(r"^tps = ([0-9.]+)", out, re.M).group(1))
    ticks = {"backends": 0, "pgbench": 0, "worker": 0, "other": 0}
    others = {}
    for pid, (kind, t, cmdline) in after.items():
        ticks[kind] += t - before.get(pid, (kind, 0))[1]
        if kind == "other" and t > before.get(pid, (kind, 0))[1]:
            name = re.sub(r"[0-9]+", "N", cmdline)[:60]
            others[name] = others.get(name, 0) + t - before.get(pid, (kind, 0))[1]
    if os.environ.get("CPU_SPLIT_OTHERS"):  # which other processes, to stderr
        sys.stderr.write("  other: " + ", ".join(f"{n} {v / TICK:.2f}s" for n, v in
                                                 sorted(others.items(), key=lambda x: -x[1])[:5]) + "\n")
    per_tx = {k: v / TICK * 1e6 / (tps * window) for k, v in ticks.items()}
    print(int(tps), " ".join(f"{per_tx[k]:.2f}" for k in ("backends", "pgbench", "worker", "other")))


if __name__ == "__main__":
    main()
