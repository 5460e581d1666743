"""Where a training step's time goes: torch.profiler over the loop's own step, eager, with the
teacher's forward, the student's forward, the method's losses and the SGD step labelled (the
backward is what remains), and the kernel table sorted by device time.

    python bench/profile_step.py [--device cuda|cpu] [--case askd_resnet8x4] [--mode bf16]
                                 [--steps 20] [--rows 25]

A CUDA graph replays these same kernels as one launch, so the eager profile is the one that
can be split by part; the graphed step's own time is printed beside it for scale (on CUDA).
Cases and modes are bench/benchmark.py's (CASES, MODES); the data is its synthetic set.
"""
import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from benchmark import CASES, TRAIN_SIZE, build_case, device_name, run_steps, sync  # noqa: E402
from dataset.synthetic import write_synthetic_cifar100  # noqa: E402

PARTS = ("teacher forward", "student forward", "method losses", "SGD step")


def labelled(fn, name):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)
    return run


def label_parts(step):
    """Wrap the parts of the loop's step (functools.partial(Trainer.step, optimizer, distiller))."""
    optimizer, distiller = step.args[:2]
    for module, name in ((distiller.teacher, PARTS[0]), (distiller.student, PARTS[1])):
        module.forward = labelled(module.forward, name)
    distiller.method_losses = labelled(distiller.method_losses, PARTS[2])
    optimizer.step = labelled(optimizer.step, PARTS[3])


def part_table(prof, device, steps):
    """ms per step of each labelled part (device time on CUDA, CPU time on the CPU)."""
    events = {e.key: e for e in prof.key_averages()}
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    rows = []
    for name in PARTS:
        event = events.get(name)
        rows.append((name, getattr(event, attr, 0.0) / 1000 / steps if event else 0.0))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--case", default="askd_resnet8x4", choices=[c[0] for c in CASES])
    parser.add_argument("--mode", default=None, help="a MODES key without a CUDA graph (default: bf16 on "
                                                     "CUDA, fast on the CPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    device = torch.device(args.device)
    mode = args.mode or ("bf16" if device.type == "cuda" else "fast")
    case = next(c for c in CASES if c[0] == args.case)
    print(f"{device_name(device)}, torch {torch.__version__}: python bench/profile_step.py "
          f"{' '.join(sys.argv[1:])}  ({case[4]}, mode {mode}, {args.steps} steps)", flush=True)
    with tempfile.TemporaryDirectory() as data_dir:
        write_synthetic_cifar100(data_dir, TRAIN_SIZE, 100, seed=0)
        _, loader, step = build_case(case, mode, data_dir, device, 0, 64)
        batches = iter(loader)
        run_steps(batches, step, device, 5, False)
        start = time.perf_counter()
        run_steps(batches, step, device, args.steps, False)
        eager_ms = (time.perf_counter() - start) * 1000 / args.steps
        label_parts(step)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            run_steps(batches, step, device, args.steps, False)
            sync(device)
        print(f"eager step: {eager_ms:.2f} ms (wall, unprofiled)")
        if device.type == "cuda":
            _, loader, graphed = build_case(case, "graph", data_dir, device, 0, 64)
            batches = iter(loader)
            run_steps(batches, graphed, device, 10, False)
            start = time.perf_counter()
            run_steps(batches, graphed, device, args.steps, False)
            print(f"CUDA-graph step: {(time.perf_counter() - start) * 1000 / args.steps:.2f} ms (wall)")
    rows = part_table(prof, device, args.steps)
    kind = "device" if device.type == "cuda" else "CPU"
    print(f"\n| part | {kind} ms per step |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    sort = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nkernels and ops by {sort} ({args.steps} steps):")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
