"""Data sources of a run: the train and test sets of the config's data set, and their loaders.

The data sets (cifar100, cifar10, tiny_imagenet, imagenet, imagefolder, synthetic) are described
in one registry (dataset/registry.py): `spec(name)`, and `data_spec(cfg)` as a run sees it.
Every training item is (image, target, index).
The order of epoch e is a permutation drawn from (seed, e) alone, so a resumed run sees the
same batches, and each DDP rank takes its own shard of that permutation.
"""
import math
import zlib

import numpy as np
import torch

from common.errors import UserError

from .cifar100 import read_split  # noqa: F401  (CIFAR-100's reader: images, labels)
from .images import IndexedImages
from .registry import NAMES, DataSpec, data_root, data_spec, spec  # noqa: F401
from .strong_view import TwoViews, collate_views


def prepare_data(cfg):
    """Make sure the config's data set is on disk: downloaded, generated or checked."""
    spec(cfg.dataset).prepare(cfg, data_root(cfg))


def locate_data(cfg):
    """What `prepare_data` would find, writing nothing (--check): ("found" | "made" | "missing",
    a line), made: the run downloads or generates the files; ("unknown", ...) for a data set that
    declares no `locate` (a plugin's)."""
    locate = getattr(spec(cfg.dataset), "locate", None)
    if locate is None:
        return "unknown", f"not checked: data set {cfg.dataset} declares no locate (dataset/registry.py)"
    return locate(cfg, data_root(cfg))


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of the permutation of epoch `set_epoch(e)`, drawn from (seed, e).

    Rank r takes positions r, r + W, r + 2W, ... so the ranks' k-th batches together are the
    k-th batch one process would take. With W > 1 the permutation is padded by wrapping
    around to a multiple of W, so every rank runs the same number of steps."""

    def __init__(self, size, seed, rank=0, world_size=1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def permutation(self):
        g = torch.Generator().manual_seed(zlib.crc32(repr((self.seed, self.epoch)).encode()))
        return torch.randperm(self.size, generator=g)

    def __iter__(self):
        order = self.permutation()
        padded = len(self) * self.world_size
        if padded > self.size:
            order = torch.cat([order, order[:padded - self.size]])
        return iter(order[self.rank::self.world_size].tolist())

    def __len__(self):
        return math.ceil(self.size / self.world_size)


def held_out(targets, fraction, seed):
    """Sorted indices of a class-stratified `fraction` of a training set: round(fraction x n_c) of
    each class's n_c images (at least one, at most n_c - 1), drawn from (seed, fraction) alone, so
    every rank and every resume holds out the same images."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(zlib.crc32(repr((seed, "val_split", float(fraction))).encode()))
    held = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(held)).astype(np.int64)


def training_parts(cfg):
    """(the images a run trains on, those it validates on or None when val_split is 0): the
    training split of cfg's data set, read once, less its `held_out` share and that share."""
    split = data_spec(cfg).read(data_root(cfg), "train")
    if not cfg.val_split:
        return split, None
    if not hasattr(split, "subset"):
        raise UserError(f"data set {cfg.dataset}'s training split has no subset(indices), which val_split "
                        f"needs (dataset/images.py): add it, or set val_split 0")
    held = held_out(split.targets, cfg.val_split, cfg.seed)
    if len(held) == 0:
        raise UserError(f"val_split {cfg.val_split} holds out no image of the {len(split)} training images: raise it")
    return split.subset(np.setdiff1d(np.arange(len(split)), held)), split.subset(held)


def build_train_loader(cfg, rank=0, world_size=1, strong_view=False, split=None):
    """This rank's training batches (of `split`: the training part of `training_parts` when
    None). `strong_view`: each image also as its strong view (dataset/strong_view.py), a batch of
    B images then holding 2B: the weak views, then the strong."""
    data_set = data_spec(cfg)
    transform = data_set.train_transform()
    if strong_view:
        transform = TwoViews(transform)
    data = IndexedImages(split if split is not None else training_parts(cfg)[0], transform)
    sampler = EpochSampler(len(data), cfg.seed, rank, world_size)
    return torch.utils.data.DataLoader(
        data, batch_size=cfg.batch_size // world_size, sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(), collate_fn=collate_views if strong_view else None)


def build_test_loader(cfg, batch_size=256, num_workers=0, split=None):
    """The test split of cfg's data set (or `split`, e.g. the held-out validation images), in
    order, with the test transform; the data must be there (prepare_data)."""
    data_set = data_spec(cfg)
    split = split if split is not None else data_set.read(data_root(cfg), "test")
    data = IndexedImages(split, data_set.test_transform())
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       pin_memory=torch.cuda.is_available())
