"""The quick start's teacher steps on the CPU with torch's default thread count against the
automatic choice (helper/threads.py), idle and beside one CPU-bound process; written into
BENCHMARKS.md.

    python bench/threads.py [--config FILE] [--warmup W] [--steps N] [--repeats R] [--no-write]

Every run is `train_teacher.py -cfg FILE epochs 1 lr_decay_epochs 1 print_freq W` with save_folder
and data_dir in a temporary folder and OMP_NUM_THREADS unset, timed from its progress line after
step W to the one after step W + N (its data loading included) and then stopped. The settings:
torch's default (the old behaviour: `num_threads` set to the count torch takes when nothing is
set, asked of a fresh process), the automatic choice (`num_threads 0`), and, idle only, the
automatic choice with `torch.set_num_interop_threads(1)` first (does the inter-op pool matter?).
Each round runs every setting once, idle and then beside `python -c "while True: pass"`; the
figure is the median over the rounds of the seconds of a training step. On 2 idle cores the
defaults take about 3 minutes; other work on the machine makes the old behaviour's runs longer.
"""
import argparse
import contextlib
import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from benchmark import ROOT, device_name, publish  # noqa: E402
from helper.config import read_yaml  # noqa: E402
from helper.threads import available_cores  # noqa: E402

INTEROP = ("import runpy, sys, torch; torch.set_num_interop_threads(1); sys.argv = sys.argv[1:]; "
           "sys.path.insert(0, '.'); runpy.run_path(sys.argv[0], run_name='__main__')")
BUSY = "while True: pass"
SHOWN = ("model", "synthetic_train_size", "batch_size", "num_workers")   # what the section says of the config


def clean_env():
    """This environment without OMP_NUM_THREADS (the runs choose their threads themselves)."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def torch_default():
    """The intra-op thread count torch takes in a fresh process when nothing is set."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True,
                              text=True, check=True).stdout)


def settings(default):
    """(name, the Python arguments before the script, extra overrides, idle only) of each setting."""
    return [(f"torch's default ({default} threads)", [], ["num_threads", str(default)], False),
            ("automatic choice", [], [], False),
            ("automatic, 1 inter-op thread", ["-c", INTEROP], [], True)]


def time_steps(prefix, overrides, args, folder, run):
    """Run number `run` of the teacher, stopped once timed: (seconds of a step, the log's thread line)."""
    command = [sys.executable, *prefix, "train_teacher.py", "-cfg", args.config, "epochs", "1", "lr_decay_epochs",
               "1", "print_freq", str(args.warmup), "data_dir", os.path.join(folder, "data"),
               "save_folder", os.path.join(folder, f"run{run}"), *overrides]
    process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen, threads, output = [], "?", []
    with process:
        for line in process.stdout:
            output.append(line)
            step = re.match(r"epoch 1/1 \[(\d+)/(\d+)\]", line)
            threads = line.strip() if line.startswith("cpu: ") else threads
            if step:
                seen.append((int(step[1]), time.monotonic()))
                if seen[-1][0] >= args.warmup + args.steps or step[1] == step[2]:
                    process.kill()
    if len(seen) < 2:
        sys.exit(f"{shlex.join(command)} printed no two progress lines:\n{''.join(output[-20:])}")
    (first, start), (last, end) = seen[0], seen[-1]
    return (end - start) / (last - first), threads


@contextlib.contextmanager
def busy_process(on):
    """One CPU-bound Python process while inside, when `on`."""
    process = subprocess.Popen([sys.executable, "-c", BUSY]) if on else None
    try:
        yield
    finally:
        if process:
            process.kill()
            process.wait()


def measure(args, folder):
    """{(setting, busy): [seconds of a step in each round]} and {setting: the thread line}."""
    times, lines = {}, {}
    for round_ in range(args.repeats):
        for busy in (False, True):
            with busy_process(busy):
                for name, prefix, overrides, idle_only in settings(args.default):
                    if busy and idle_only:
                        continue
                    seconds, lines[name] = time_steps(prefix, overrides, args, folder, sum(map(len, times.values())))
                    times.setdefault((name, busy), []).append(seconds)
                    print(f"round {round_ + 1} {'busy' if busy else 'idle'} {name}: {seconds:.2f} s/step "
                          f"[{lines[name]}] (load {os.getloadavg()[0]:.1f})", flush=True)
    return times, lines


def cell(values):
    """'median (each round's)' of a table cell; '-' for a setting not measured."""
    return f"{statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})" if values else "-"


def section(args, times, lines, command):
    """The BENCHMARKS.md section."""
    cores = available_cores()
    load = args.load_before.split("/")[0]
    config = read_yaml(os.path.join(ROOT, args.config))
    out = [f"## CPU threads, the quick-start teacher: {device_name(torch.device('cpu')).split(' (')[0]} "
           f"({cores} cores)", "",
           f"- measured {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, Python "
           f"{platform.python_version()}; load average (1/5/15 min) {args.load_before} before and "
           f"{args.load_after} after the run",
           f"- command: `{command}`",
           f"- each run: `python3 train_teacher.py -cfg {args.config} epochs 1 lr_decay_epochs 1 print_freq "
           f"{args.warmup} data_dir TMP save_folder TMP [num_threads {args.default}]`, OMP_NUM_THREADS unset, "
           f"timed from its progress line after step {args.warmup} to the one after step "
           f"{args.warmup + args.steps} (data loading included), then stopped; seconds of a training step, "
           f"the median over {args.repeats} rounds (each round runs every setting once, in turn; every "
           f"round's figure in brackets)",
           f"- {args.config} then: " + ", ".join(f"{key} {config.get(key, '-')}" for key in SHOWN),
           f"- busy: one `python3 -c \"{BUSY}\"` process beside the run",
           f"- the 1-minute load average was {load} before the bench started: "
           + ("other work ran on the machine, so 'idle' means no busy process of the bench's own, "
              "not an idle machine" if float(load) >= 0.5 else "the machine was otherwise idle"),
           "", "| setting | torch threads (the run's log) | idle: s/step | beside a busy process: s/step |",
           "|---|---|---:|---:|"]
    for name, _, _, _ in settings(args.default):
        out.append(f"| {name} | {lines[name]} | {cell(times.get((name, False)))} | "
                   f"{cell(times.get((name, True)))} |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart/teacher.yaml", help="the teacher config run")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timing starts (print_freq)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/threads.py", *sys.argv[1:]])
    args.default = torch_default()
    args.load_before = "%.1f/%.1f/%.1f" % os.getloadavg()
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}: {command} (load {args.load_before}); "
          f"torch's default {args.default} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="askd_threads_") as folder:
        times, lines = measure(args, folder)
    args.load_after = "%.1f/%.1f/%.1f" % os.getloadavg()
    publish(args, torch.device("cpu"), "threads-", section(args, times, lines, command))


if __name__ == "__main__":
    main()
