"""Training steps on the CPU with each thread choice (helper/threads.py's rule, the rule before it,
torch's default), idle and beside one CPU-bound process, for 0 and 2 loader workers, and the CRD
repository's own KD loop beside them; written into BENCHMARKS.md.

    python bench/threads.py [--crd DIR] [--warmup W] [--steps N] [--repeats R] [--no-write]

Cases: the quick-start teacher (`train_teacher.py -cfg configs/quickstart/teacher.yaml`, its 2
loader workers) and the KD step of `configs/kds/kd/resnet32x4_resnet8x4.yaml` (`train_student.py`,
a resnet32x4 teacher of random weights, the synthetic set of 5000 images in CIFAR-100's format,
batch 64) with `num_workers` 0 and 2. Each run is the script with `epochs 1 lr_decay_epochs 1
print_freq W`, data and run folder in a temporary folder and OMP_NUM_THREADS unset, timed from its
progress line after step W to the one after step W + N (data loading included), then stopped.
The settings are thread counts given as `num_threads`: torch's default (one per core, asked of a
fresh process), the rule before (cores less max(workers, 1)), the rule (nothing set); settings that
come to the same count run once, their names together. `--crd DIR` (a checkout of
HobbitLong/RepDistiller) adds its own KD loop on the same images (bench/crd_loop.py: its
models, DistillKL, train_distill, loader; torch's default threads; 0 workers), timed the same way
from its progress lines. Each round runs every setting once, idle and then beside
`python -c "while True: pass"`; the figure is the median over the rounds of the seconds of a
step. On 2 idle cores the defaults take about 15 minutes.
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
from helper.threads import available_cores, choose_threads  # noqa: E402

BUSY = "while True: pass"
QUICK = "configs/quickstart/teacher.yaml"
KD = "configs/kds/kd/resnet32x4_resnet8x4.yaml"
PROGRESS = re.compile(r"epoch 1/1 \[(\d+)/(\d+)\]|Epoch: \[1\]\[(\d+)/(\d+)\]")  # ours, the CRD loop's


def clean_env():
    """This environment without OMP_NUM_THREADS (the runs choose their threads themselves)."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def torch_default():
    """The intra-op thread count torch takes in a fresh process when nothing is set."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True,
                              text=True, check=True).stdout)


def cases(folder):
    """(name, command before the thread override, loader workers) of each case."""
    kd = ["train_student.py", "-cfg", KD, "dataset", "synthetic", "data_dir", os.path.join(folder, "kd_data"),
          "synthetic_test_size", "100", "path_t", os.path.join(folder, "resnet32x4.pth")]
    return [("quick-start teacher, resnet14", ["train_teacher.py", "-cfg", QUICK, "data_dir",
                                               os.path.join(folder, "quick_data")], 2),
            ("KD resnet32x4 -> resnet8x4, 0 workers", kd + ["num_workers", "0"], 0),
            ("KD resnet32x4 -> resnet8x4, 2 workers", kd + ["num_workers", "2"], 2)]


def settings(workers, default, cores):
    """[(names, num_threads or None for the rule)]: each distinct thread count once."""
    rule = choose_threads("cpu", 0, workers, cores)[0]
    counts = {}
    for name, threads in ((f"torch's default ({default})", default),
                          ("the rule before: cores - max(workers, 1)", max(1, cores - max(workers, 1))),
                          ("the rule: cores - workers", rule)):
        counts.setdefault(threads, []).append(name)
    return [(" = ".join(names), None if threads == rule else threads) for threads, names in counts.items()]


def time_steps(command, args):
    """Run `command` (a list after the Python executable) until timed: (seconds of a step, the
    run's thread line or '')."""
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen, threads, output = [], "", []
    with process:
        for line in process.stdout:
            output.append(line)
            threads = line.strip() if line.startswith("cpu: ") else threads
            step = PROGRESS.search(line)
            if step:
                done, total = (int(g) for g in (step.groups()[:2] if step[1] else step.groups()[2:]))
                seen.append((done, time.monotonic()))
                if done >= args.warmup + args.steps or done == total:
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


def runs(args, folder):
    """[(case, setting, command)] of every timed run."""
    out = []
    for case, command, workers in cases(folder):
        for name, threads in settings(workers, args.default, args.cores):
            extra = [] if threads is None else ["num_threads", str(threads)]
            out.append((case, name, command + ["epochs", "1", "lr_decay_epochs", "1", "print_freq",
                                               str(args.warmup), *extra]))
    if args.crd:
        out.append(("KD resnet32x4 -> resnet8x4, 0 workers", "the CRD repository's loop (torch's default)",
                    ["bench/crd_loop.py", "--crd", args.crd, "--data", os.path.join(folder, "kd_data"),
                     "--print-freq", str(args.warmup)]))
    return out


def measure(args, folder):
    """{(case, setting, busy): [seconds of a step in each round]} and {(case, setting): thread line}."""
    from dataset.synthetic import write_synthetic_cifar100
    from models import model_dict
    torch.save({"model": model_dict["resnet32x4"](num_classes=100).state_dict()},
               os.path.join(folder, "resnet32x4.pth"))
    write_synthetic_cifar100(os.path.join(folder, "kd_data"), 5000, 100, seed=0, noise=1.0)
    times, lines = {}, {}
    for round_ in range(args.repeats):
        for busy in (False, True):
            with busy_process(busy):
                for n, (case, name, command) in enumerate(runs(args, folder)):
                    if command[0] != "bench/crd_loop.py":
                        command += ["save_folder", os.path.join(folder, f"run_{round_}_{busy}_{n}")]
                    seconds, lines[case, name] = time_steps(command, args)
                    times.setdefault((case, name, busy), []).append(seconds)
                    print(f"round {round_ + 1} {'busy' if busy else 'idle'} {case}, {name}: {seconds:.3f} s/step "
                          f"[{lines[case, name]}] (load {os.getloadavg()[0]:.1f})", flush=True)
    return times, lines


def cell(values):
    """'median (each round's)' of a table cell."""
    return f"{statistics.median(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def section(args, times, lines, command):
    """The BENCHMARKS.md section."""
    load = args.load_before.split("/")[0]
    out = [f"## CPU threads: {device_name(torch.device('cpu')).split(' (')[0]} ({args.cores} cores)", "",
           f"- measured {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, Python "
           f"{platform.python_version()}; load average (1/5/15 min) {args.load_before} before and "
           f"{args.load_after} after the run",
           f"- command: `{command}`",
           f"- each run: the case's script with `epochs 1 lr_decay_epochs 1 print_freq {args.warmup}` [and "
           f"`num_threads N`], OMP_NUM_THREADS unset, timed from its progress line after step {args.warmup} to "
           f"the one after step {args.warmup + args.steps} (data loading included), then stopped; seconds of a "
           f"training step, the median over {args.repeats} rounds (every round's figure in brackets)",
           f"- quick-start teacher: `{QUICK}` (resnet14, 4000 synthetic images, batch 64, 2 loader workers); "
           f"KD: `{KD}` on 5000 synthetic images in CIFAR-100's format (batch 64, a resnet32x4 teacher of random "
           f"weights)",
           f"- busy: one `python3 -c \"{BUSY}\"` process beside the run",
           f"- the 1-minute load average was {load} before the bench started: "
           + ("other work ran on the machine, so 'idle' means no busy process of the bench's own, "
              "not an idle machine" if float(load) >= 0.5 else "the machine was otherwise idle"),
           "", "| case | setting | torch threads (the run's log) | idle: s/step | beside a busy process: s/step |",
           "|---|---|---|---:|---:|"]
    for case, name in lines:
        out.append(f"| {case} | {name} | {lines[case, name] or '-'} | {cell(times[case, name, False])} | "
                   f"{cell(times[case, name, True])} |")
    crd = [key for key in lines if key[1].startswith("the CRD")]
    if crd:
        kd_case = crd[0][0]
        ours = next(name for case, name in lines if case == kd_case and "the rule:" in name)
        for busy, label in ((False, "idle"), (True, "beside a busy process")):
            ratio = statistics.median(times[kd_case, ours, busy]) / statistics.median(times[crd[0] + (busy,)])
            out.append(f"{'' if busy else chr(10)}- {label}: the KD step with the defaults (0 workers) takes "
                       f"{ratio:.2f}x the CRD repository's loop" + (" (target: within 1.10x)" if not busy else ""))
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--crd", help="a checkout of HobbitLong/RepDistiller: time its KD loop beside ours")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timing starts (print_freq)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/threads.py", *sys.argv[1:]])
    args.default, args.cores = torch_default(), available_cores()
    args.load_before = "%.1f/%.1f/%.1f" % os.getloadavg()
    print(f"{device_name(torch.device('cpu'))}, torch {torch.__version__}: {command} (load {args.load_before}); "
          f"torch's default {args.default} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="askd_threads_") as folder:
        times, lines = measure(args, folder)
    args.load_after = "%.1f/%.1f/%.1f" % os.getloadavg()
    publish(args, torch.device("cpu"), "threads-", section(args, times, lines, command))


if __name__ == "__main__":
    main()
