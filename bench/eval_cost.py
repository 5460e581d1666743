"""What the evaluation of each epoch costs beside the epoch's training: `evaluate()` of the
10000 test images by resnet8x4 against one training epoch (50000 images) of ASKD
resnet32x4 -> resnet8x4, on the path the loop uses (the fast path; on CUDA with the CUDA graph,
bf16 and channels_last), measured in one process, blocks interleaved.

    python bench/eval_cost.py [--device cpu|cuda] [--steps N] [--test-images N] [--repeats R]

A CPU measures a slice and scales it: `steps` training steps to the 781 steps of an epoch,
`test_images` test images to 10000 (evaluation is per image: batches of 256, no state).
Prints a markdown table and writes it as this device's evaluation section of BENCHMARKS.md
(unless --no-write).
"""
import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from benchmark import (CASES, MODES, TRAIN_SIZE, build_case, device_name, forever, run_steps, sync,  # noqa: E402
                       write_markdown)
from dataset.device_loader import build_fast_loaders  # noqa: E402
from dataset.synthetic import write_synthetic_cifar100  # noqa: E402
from helper.trainer import evaluate  # noqa: E402
from models import model_dict  # noqa: E402

TEST_SIZE = 10000
CASE = next(c for c in CASES if c[0] == "askd_resnet8x4")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps timed per block (default: "
                        "3 on a CPU, 781 = an epoch on CUDA)")
    parser.add_argument("--test-images", type=int, default=None, help="test images evaluated per block "
                        "(default: 500 on a CPU, 10000 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved blocks; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    steps = args.steps or (3 if cpu else 781)
    test_images = args.test_images or (500 if cpu else TEST_SIZE)
    mode = "fast" if cpu else "graph_cl"
    epoch_steps = TRAIN_SIZE // 64
    data_dir = tempfile.mkdtemp(prefix="askd_eval_")
    try:
        write_synthetic_cifar100(data_dir, TRAIN_SIZE, test_images, seed=0)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        cfg, loader, step = build_case(CASE, mode, data_dir, device, 0, 64)
        _, test_loader = build_fast_loaders(cfg, device)
        student = model_dict["resnet8x4"](num_classes=100).to(device)
        if cfg.channels_last:
            student = student.to(memory_format=torch.channels_last)
        it = forever(loader)
        run_steps(it, step, device, 1 if cpu else 5, False)   # warm-up (on CUDA past the graph's capture)
        evaluate(student, test_loader, device)
        train, test = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run_steps(it, step, device, steps, False)
            train.append((time.perf_counter() - start) * epoch_steps / steps)
            sync(device)
            start = time.perf_counter()
            evaluate(student, test_loader, device)
            sync(device)
            test.append((time.perf_counter() - start) * TEST_SIZE / test_images)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    epoch, evaluation = statistics.median(train), statistics.median(test)
    name = device_name(device)
    text = "\n".join([
        f"## Evaluation against training on {device.type.upper()}: {name}", "",
        f"- measured {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}; load average after "
        f"{'%.1f/%.1f/%.1f' % os.getloadavg()}",
        f"- command: `python bench/eval_cost.py {' '.join(sys.argv[1:])}`: {steps} training steps scaled to the "
        f"{epoch_steps} of an epoch, {test_images} test images scaled to {TEST_SIZE}, median of {args.repeats} "
        f"interleaved blocks", "",
        f"| ({MODES[mode][2]}, {MODES[mode][1]}) | seconds | share of an epoch with evaluation |", "|---|---:|---:|",
        f"| training epoch: {CASE[4]}, {epoch_steps} steps of 64 | {epoch:.2f} | {epoch / (epoch + evaluation):.0%} |",
        f"| evaluate(): resnet8x4 on {TEST_SIZE} test images, batches of 256 | {evaluation:.2f} | "
        f"{evaluation / (epoch + evaluation):.0%} |"]) + "\n"
    print(text)
    if not args.no_write:
        write_markdown(f"eval-{device.type}:{name.split(' (')[0]}", text)


if __name__ == "__main__":
    main()
