"""What timm's recipe parts cost: a KD training step with each part on beside the plain step, and
the data loader's throughput with timm's transforms (RandAugment at 224 pixels) beside CIFAR's crop
and flip; written into BENCHMARKS.md.

    python bench/recipe.py [--device cpu|cuda] [--steps N] [--repeats R] [--batches B] [--no-write]

Steps: `configs/kds/kd/resnet32x4_resnet8x4.yaml` (batch 64, 32-pixel images of random values,
random weights) through the loop's own `Trainer.train_epoch` over `steps` batches, each setting
`repeats` times in turn; images/s of the median block. The settings: the CRD protocol (plain), then
one part at a time (optimizer adamw; lr_schedule cosine with sched_on_updates, the rate set every
step; label_smoothing 0.1; mixup 0.8 with cutmix 1.0, the soft targets; clip_grad 5; model_ema,
its update every step), then all of them. Loader: `dataset.build_train_loader` on a synthetic
CIFAR-100 of 2048 images, `transform crd` (32 pixels) and `transform timm` at 224 pixels with
RandAugment rand-m9-mstd0.5-inc1 and random erasing 0.25 (OFA-KD's ViT recipe), with 0, 1 and 2
workers; images/s over `batches` batches of 64 after the first, and per worker.
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from benchmark import ROOT, device_name, publish, sync  # noqa: E402

KD = "configs/kds/kd/resnet32x4_resnet8x4.yaml"
PARTS = [("plain (the CRD protocol)", {}),
         ("optimizer adamw", {"optimizer": "adamw", "learning_rate": 5e-4, "weight_decay": 0.05}),
         ("cosine, set every step", {"lr_schedule": "cosine", "sched_on_updates": True, "lr_warmup_epochs": 1}),
         ("label_smoothing 0.1", {"label_smoothing": 0.1}),
         ("mixup 0.8 + cutmix 1.0", {"mixup": 0.8, "cutmix": 1.0}),
         ("clip_grad 5", {"clip_grad": 5.0}),
         ("model_ema", {"model_ema": True})]
PARTS.append(("all of them", {k: v for _, keys in PARTS for k, v in keys.items()}))
RANDAUGMENT = {"transform": "timm", "input_size": 224, "auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25}


class Batches(list):
    """Fixed batches as the loop iterates a loader (fresh tensors each pass: Mixup mixes in place)."""

    def __init__(self, batch, count, device):
        super().__init__((batch[0].clone().to(device), batch[1].to(device), batch[2].to(device))
                         for _ in range(count))

    @property
    def sampler(self):
        return range(sum(len(b[1]) for b in self))


def step_rates(args, device):
    """{setting: [images/s of each block]}."""
    from distillers import build
    from helper.config import load_config
    from helper.trainer import Trainer
    from models import model_dict
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(64, 3, 32, 32, generator=gen), torch.randint(0, 100, (64,), generator=gen), torch.arange(64))
    trainers = []
    for name, keys in PARTS:
        overrides = [str(x) for k, v in {"device": device.type, "epochs": 2, "lr_decay_epochs": 2, **keys}.items()
                     for x in (k, v)]
        cfg = load_config(os.path.join(ROOT, KD), overrides, "student")
        torch.manual_seed(0)
        distiller = build(cfg, model_dict[cfg.model_s](num_classes=100), model_dict[cfg.model_t](num_classes=100))
        distiller = distiller.to(device).train()
        loader = Batches(batch, args.steps, device)
        trainers.append((name, Trainer(cfg, distiller, loader, None, None, None, device, num_classes=100)))
    rates = {name: [] for name, _ in trainers}
    for block in range(args.repeats + 1):  # the first block warms up, untimed
        for name, trainer in trainers:
            trainer.train_loader = Batches(batch, args.steps, device)
            sync(device)
            start = time.perf_counter()
            trainer.train_epoch("bench", trainer.train_step, trainer.recipe.lr(1), epoch=1)
            sync(device)
            if block:
                rates[name].append(64 * args.steps / (time.perf_counter() - start))
                print(f"block {block} {name}: {rates[name][-1]:.1f} images/s", flush=True)
    return rates


def loader_rates(args, folder):
    """[(transform, workers, images/s)] of the plain path's training loader."""
    import dataset
    from helper.config import get_cfg_defaults
    out = []
    for label, keys in (("crd: crop and flip, 32 pixels", {}),
                        ("timm: 224 pixels, RandAugment rand-m9-mstd0.5-inc1, erasing 0.25", RANDAUGMENT)):
        for workers in (0, 1, 2):
            cfg = get_cfg_defaults()
            for key, value in {"dataset": "synthetic", "data_dir": folder, "synthetic_train_size": 2048,
                               "synthetic_test_size": 100, "num_workers": workers, **keys}.items():
                cfg[key] = value
            dataset.prepare_data(cfg)  # (generated once)
            loader = iter(dataset.build_train_loader(cfg))
            next(loader)
            start = time.perf_counter()
            for _ in range(args.batches):
                next(loader)
            rate = 64 * args.batches / (time.perf_counter() - start)
            out.append((label, workers, rate))
            print(f"loader {label}, {workers} workers: {rate:.1f} images/s", flush=True)
    return out


def section(args, device, steps, loaders, command):
    plain = statistics.median(steps[PARTS[0][0]])
    out = [f"## timm's recipe parts: {device_name(device)}", "",
           f"- measured {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, Python "
           f"{platform.python_version()}; load average (1/5/15 min) {args.load_before} before and "
           f"{args.load_after} after the run",
           f"- command: `{command}`",
           f"- steps: `{KD}` (resnet32x4 -> resnet8x4, batch 64, 32 pixels, random weights) through "
           f"`Trainer.train_epoch`, {args.steps} steps a block, {args.repeats} blocks per setting after one "
           f"untimed, the settings interleaved; images/s of the median block (each block's in brackets)",
           f"- loader: `dataset.build_train_loader` (the plain path), synthetic CIFAR-100 of 2048 images, "
           f"batch 64, {args.batches} batches timed after the first",
           "", "| training step | images/s (median) | vs plain | blocks |", "|---|---:|---:|---|"]
    for name, _ in PARTS:
        values = steps[name]
        median = statistics.median(values)
        out.append(f"| {name} | {median:.1f} | {median / plain:.2f}x | {', '.join(f'{v:.1f}' for v in values)} |")
    if loaders:
        out += ["", "| loader transform | workers | images/s | images/s per worker |", "|---|---:|---:|---:|"]
        for label, workers, rate in loaders:
            out.append(f"| {label} | {workers} | {rate:.1f} | {rate / max(workers, 1):.1f} |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per setting")
    parser.add_argument("--batches", type=int, default=16, help="loader batches timed (0: no loader figures)")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/recipe.py", *sys.argv[1:]])
    device = torch.device(args.device)
    args.load_before = "%.1f/%.1f/%.1f" % os.getloadavg()
    print(f"{device_name(device)}, torch {torch.__version__}: {command} (load {args.load_before})", flush=True)
    steps = step_rates(args, device)
    with tempfile.TemporaryDirectory(prefix="askd_recipe_") as folder:
        loaders = loader_rates(args, folder) if args.batches else []
    args.load_after = "%.1f/%.1f/%.1f" % os.getloadavg()
    publish(args, device, "recipe-", section(args, device, steps, loaders, command))


if __name__ == "__main__":
    main()
