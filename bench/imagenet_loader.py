"""Images/s of ImageNet's data loaders on a generated ImageFolder tree: the plain path
(torchvision's PIL decode + RandomResizedCrop(224) + flip per image in a DataLoader, 0 and
--workers workers) and, on a CUDA machine, the fast path (dataset/gpu_jpeg.py: JPEG files
decoded on the GPU, crop/resize/flip there).

    python bench/imagenet_loader.py [--images 256] [--workers 2] [--batch 64] [--epochs 2] [--threads N]
                                    [--device cpu|cuda]

The tree (--images JPEG files of 500 x 375, quality 90, in 8 class folders of train/ and val/,
written with PIL into a temporary folder and read by dataset.imagenet's reader) has the typical
size of an ImageNet photo. Timed: `--epochs` passes over the training split, after the first
batch of each (worker start-up and the first decode excluded), images/s = images / seconds.
The figures go to stdout with the device, torch version, command and the load average before
and after (BENCHMARKS.md quotes them). `--threads`: torch's intra-op threads of the main process
(the workers use one each, as torch sets them).
"""
import argparse
import os
import platform
import shlex
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import dataset  # noqa: E402
from dataset.device_loader import build_fast_loaders  # noqa: E402
from helper.config import get_cfg_defaults  # noqa: E402
from layouts import write_image_folder  # noqa: E402

CLASSES = 8


def rate(loader, epochs, device):
    images, seconds = 0, 0.0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        start = None
        for image, target, _ in loader:
            image = image.to(device, non_blocking=True)
            if start is None:                 # the first batch: start-up, excluded
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                continue
            images += len(target)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
    return images / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    device = torch.device(args.device)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    print(f"{name} ({os.cpu_count()} logical cores), torch {torch.__version__}, Python "
          f"{platform.python_version()}: {command}", flush=True)
    with tempfile.TemporaryDirectory() as root:
        wnids = [f"n{c:08d}" for c in range(CLASSES)]
        write_image_folder(root, wnids, train_per_class=args.images // CLASSES, val_per_class=1,
                           height=375, width=500)
        cfg = get_cfg_defaults()
        cfg.dataset, cfg.data_dir, cfg.batch_size = "imagenet", root, args.batch
        import warnings
        warnings.simplefilter("ignore", UserWarning)      # 8 classes, not 1000: known
        rows = []
        for workers in sorted({0, args.workers}):
            cfg.num_workers = workers
            loader = dataset.build_train_loader(cfg)
            rows.append((f"plain: DataLoader, PIL decode + RandomResizedCrop per image", f"{workers} workers",
                         rate(loader, args.epochs, device)))
        if device.type == "cuda":
            loader, _ = build_fast_loaders(cfg, device)
            rows.append(("fast: JPEG decoded on the GPU (decode_jpeg), crop/resize on the device", "cuda",
                         rate(loader, args.epochs, device)))
    print(f"\n{args.images} JPEG files 500x375, batch {args.batch}, {args.epochs} epochs (first batch of each "
          f"excluded), torch threads {torch.get_num_threads()}; load average (1/5/15 min) "
          f"{'/'.join(f'{v:.1f}' for v in load_before)} before, "
          f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())} after\n")
    print("| pipeline | setting | images/s |\n|---|---|---:|")
    for what, setting, value in rows:
        print(f"| {what} | {setting} | {value:,.0f} |")


if __name__ == "__main__":
    main()
