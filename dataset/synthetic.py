"""A learnable, CIFAR-100-shaped synthetic data set, written in CIFAR-100's own file format.

Each class c has a smooth, left-right symmetric colour pattern P_c (a 4x4x3 Gaussian grid
upsampled to 32x32, so 4-pixel crops and flips keep it recognisable). An image of class c is
    x = 128 + 48 * (P_c + noise * N(0, 1) smoothed + brightness)   clipped to uint8,
so the task is learnable and its difficulty is set by `noise`. The files are written into
`<root>/cifar-100-python/` exactly as torchvision's CIFAR-100 and read by the same reader.
"""
import json
import os
import pickle

import torch
import torch.nn.functional as F

from common.files import write_atomic

from .cifar100 import BASE_FOLDER, NUM_CLASSES, is_present, split_path

STAMP = "synthetic.json"


def class_patterns(seed):
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(NUM_CLASSES, 3, 4, 4, generator=g)
    grid = (grid + grid.flip(-1)) / 2 ** 0.5
    return F.interpolate(grid, size=32, mode="bilinear", align_corners=False)


def make_images(labels, patterns, noise, g):
    n = len(labels)
    speckle = torch.randn(n, 3, 16, 16, generator=g)
    speckle = F.interpolate(speckle, size=32, mode="bilinear", align_corners=False)
    brightness = 0.3 * torch.randn(n, 1, 1, 1, generator=g)
    x = patterns[labels] + noise * speckle + brightness
    return (128 + 48 * x).round().clamp(0, 255).to(torch.uint8).numpy()


def write_split(path, images, labels, split):
    entry = {
        "filenames": [f"synthetic_{split}_{i}.png" for i in range(len(labels))],
        "batch_label": f"synthetic {split} batch",
        "fine_labels": [int(v) for v in labels],
        "coarse_labels": [int(v) // 5 for v in labels],
        "data": images.reshape(len(labels), -1),  # N x 3072, channel-major
    }
    write_atomic(path, pickle.dumps(entry, protocol=2), "the synthetic data set")


def is_written(root, params):
    """Whether `root` holds the data set of `params` (its stamp, written last, says so)."""
    stamp = os.path.join(root, BASE_FOLDER, STAMP)
    if not (is_present(root) and os.path.isfile(stamp)):
        return False
    with open(stamp) as f:
        return json.load(f) == params


def write_synthetic_cifar100(root, train_size, test_size, seed=0, noise=1.0):
    """Write the data set into `root` unless the same one is already there."""
    params = {"train_size": train_size, "test_size": test_size, "seed": seed, "noise": noise}
    if is_written(root, params):
        return
    stamp = os.path.join(root, BASE_FOLDER, STAMP)
    patterns = class_patterns(seed)
    g = torch.Generator().manual_seed(seed + 1)
    for split, size in (("train", train_size), ("test", test_size)):
        labels = torch.arange(size) % NUM_CLASSES
        labels = labels[torch.randperm(size, generator=g)]
        images = make_images(labels, patterns, noise, g)
        write_split(split_path(root, split), images, labels.numpy(), split)
    meta = {"fine_label_names": [f"class_{i}" for i in range(NUM_CLASSES)],
            "coarse_label_names": [f"superclass_{i}" for i in range(NUM_CLASSES // 5)]}
    write_atomic(split_path(root, "meta"), pickle.dumps(meta, protocol=2), "the synthetic data set")
    write_atomic(stamp, json.dumps(params).encode(), "the synthetic data set")  # last: marks it complete


def params_of(cfg):
    """The generator's arguments a run's config asks for (what the stamp records)."""
    return {"train_size": cfg.synthetic_train_size, "test_size": cfg.synthetic_test_size,
            "seed": cfg.synthetic_seed, "noise": cfg.synthetic_noise}


def prepare(cfg, root):
    write_synthetic_cifar100(root, **params_of(cfg))


def locate(cfg, root):
    """(state, line) of the data set in `root` (registry.py's `locate`), writing nothing."""
    params = params_of(cfg)
    if is_written(root, params):
        return "found", f"the synthetic data set in {root}"
    return "made", f"the run generates it into {root} ({params['train_size']} + {params['test_size']} images)"
