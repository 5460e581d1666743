"""The fast path's data (`fast: true`): the whole split on the training device, augmented in batches.

`DeviceLoader` stands in for the plain torch DataLoader in the loop: iterating yields
(image float32 B x 3 x S x S normalised, target int64, index int64), all on the device;
`len()` is the number of batches, `.sampler` is the EpochSampler (`set_epoch` works) and
`.dataset.targets` the numpy labels. S and the crop padding P are the data set's: 32 and 4 for
the CIFAR sets, 64 and 8 for Tiny-ImageNet (figures below for CIFAR). ImageNet's fast path
decodes JPEG files on the GPU instead (dataset/gpu_jpeg.py).

The split is ONE uint8 tensor N x 3 x S x S on the device (CIFAR-100's 50000 training images:
154 MB; Tiny-ImageNet's 100000: 1.2 GB). A training batch is gathered by the sampler's indices,
then RandomCrop(S, padding=P) and RandomHorizontalFlip are applied to the whole batch at once,
with torchvision's distribution: each of the (2P + 1)^2 offsets (81 for CIFAR: 0..8 x 0..8 in
the zero-padded 40 x 40 image) and each flip equally likely, independently per image. The zero
padding is the uint8 value 0 BEFORE normalisation, as torchvision pads the PIL image. Crop and
flip are one gather: the batch is written into the centre of a zeroed (2B, 3, 40, 40) buffer,
images 0..B-1 as they are and B..2B-1 mirrored; an `as_strided` view whose first index is an
element offset into that buffer (stride 1) then turns every crop into a single row of
`index_select` (a flipped crop at column offset dx is the mirrored image's crop at 8 - dx).
Normalisation is ToTensor's and Normalize's arithmetic, op for op (x / 255, - mean, / std), so
a crop equals torchvision's bit for bit on the CPU (on CUDA PyTorch divides by a scalar as a
multiplication by its reciprocal: within an ulp).

On the CPU the batches are made with one intra-op thread (restored before each batch is
yielded): the ops are small, and parallel regions only add synchronisation, which on a shared,
loaded machine costs a time slice per op.

The random draws come from torch's global RNG on the loader's device, one `randint` over the
2 (2P + 1)^2 (offset, flip) combinations (162 for CIFAR) for the whole epoch, when iteration starts: the loop's
per-epoch re-seeding makes the augmentation reproducible, independent of what the model draws.

Eval loaders (`train=False`) only normalise, keep the last partial batch, and visit the images
in order unless given a sampler. `pad_last=True` pads that last batch to the full batch size
(static shapes, e.g. for CUDA graphs): padded rows have image 0, target -100 (cross_entropy's
ignore_index) and index -1, so the mask of real rows is `index >= 0`.
"""
import contextlib

import numpy as np
import torch

from common.errors import UserError

from .cifar100 import MEAN, STD
from .imagefolder import resize_of
from .registry import data_root, data_spec

PAD = 4                                # the CIFAR sets' crop padding (Tiny-ImageNet: 8)
IGNORE_TARGET = -100                   # F.cross_entropy's default ignore_index


def combinations(pad):
    """Number of (dy, dx, flip) combinations of RandomCrop(padding=pad) + flip: 162 for pad 4."""
    return (2 * pad + 1) ** 2 * 2


COMBOS = combinations(PAD)


def draw_views(n, device, pad=PAD):
    """n view numbers (int64 in 0..combinations(pad) - 1) from the global RNG of `device`, all
    equally likely: which (crop offset, flip) each image gets (`view_augmentation`)."""
    return torch.randint(0, combinations(pad), (n,), device=device)


def view_augmentation(view, pad=PAD):
    """(dy, dx, flip) of view numbers: dy, dx int64 in 0..2 pad (the crop's top-left corner in
    the zero-padded image), flip bool. View v is dy = v // (2 (2 pad + 1)), dx = v // 2 mod
    (2 pad + 1), flip = v mod 2: the teacher cache (helper/teacher_cache.py) is indexed the same way."""
    offsets = 2 * pad + 1
    return view // (2 * offsets), (view // 2) % offsets, (view % 2).bool()


def draw_augmentation(n, device, pad=PAD):
    """(dy, dx, flip) for n images, every combination equally likely, as torchvision's
    RandomCrop(size, padding=pad) + RandomHorizontalFlip()."""
    return view_augmentation(draw_views(n, device, pad), pad)


class CropFlip:
    """Batched RandomCrop(S, padding=pad) + horizontal flip of uint8 N x C x S x S images at
    given offsets; keeps its zero-bordered work buffer between calls (borders are never written)."""

    def __init__(self, pad=PAD):
        self.pad, self.buffer = pad, None

    def _buffer(self, n, like):
        shape = (like.shape[1], like.shape[2] + 2 * self.pad, like.shape[3] + 2 * self.pad)
        if (self.buffer is None or self.buffer.shape[0] < 2 * n or self.buffer.device != like.device
                or self.buffer.shape[1:] != shape):
            self.buffer = torch.zeros((2 * n,) + shape, dtype=torch.uint8, device=like.device)
        return self.buffer[:2 * n]

    def __call__(self, images, dy, dx, flip):
        n, c, size = images.shape[0], images.shape[1], images.shape[-1]
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != size:
            raise ValueError(f"expected square uint8 images N x C x S x S, got {images.dtype} "
                             f"{tuple(images.shape)}")
        if n == 0:
            return images.clone()
        pad = self.pad
        padded = size + 2 * pad
        buf = self._buffer(n, images)
        buf[:n, :, pad:pad + size, pad:pad + size] = images
        buf[n:, :, pad:pad + size, pad:pad + size] = images.flip(-1)
        image_size = c * padded * padded
        span = (c - 1) * padded * padded + (size - 1) * padded + size   # elements one crop spans
        # crop k of the view starts at element k of buf: (channel, row, column) strides of buf
        crops = buf.as_strided((buf.numel() - span + 1, c, size, size),
                               (1, padded * padded, padded, 1))
        which = torch.arange(n, device=images.device) + n * flip.long()
        column = torch.where(flip, 2 * pad - dx, dx)
        start = which * image_size + dy * padded + column
        return crops.index_select(0, start)


def crop_flip(images, dy, dx, flip, pad=PAD):
    """uint8 images cropped at (dy, dx) of their zero-padded version, then mirrored where `flip`:
    torchvision's pad(pad) -> crop(dy, dx, S, S) -> hflip, for a whole batch."""
    return CropFlip(pad)(images, dy, dx, flip)


class Normalize:
    """uint8 N x 3 x H x W -> float32 (x / 255 - MEAN) / STD: ToTensor + Normalize, op for op."""

    def __init__(self, device, mean=MEAN, std=STD):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)

    def __call__(self, images):
        # uint8 / 255 computes in float32: the same values as ToTensor's .float().div(255)
        return torch.div(images, 255).sub_(self.mean).div_(self.std)


def normalize(images, mean=MEAN, std=STD):
    return Normalize(images.device, mean, std)(images)


class DeviceData:
    """The loader's `.dataset`: the images on the device and the numpy labels."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.targets)


class DeviceLoader:
    """A DataLoader-like iterator over a split held on `device` (see the module docstring).

    images: uint8 numpy N x S x S x 3 (read_split's layout); targets: numpy int labels (N);
    sampler: yields this rank's indices of the epoch (EpochSampler), None: 0..N-1 in order;
    train: random crop (padding `pad`) + flip; drop_last: drop the last partial batch; pad_last:
    pad it instead (index -1, target -100); memory_format: of the yielded images
    (torch.channels_last or torch.contiguous_format); mean, std: of the normalisation; views:
    a training batch also yields each image's view number (`view_augmentation`), fourth."""

    def __init__(self, images, targets, batch_size, device, sampler=None, train=True, drop_last=True,
                 pad_last=False, memory_format=torch.contiguous_format, pad=PAD, mean=MEAN, std=STD,
                 views=False):
        images = np.asarray(images)
        targets = np.asarray(targets)
        if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3
                or images.shape[1] != images.shape[2]):
            raise ValueError(f"expected uint8 images N x S x S x 3, got {images.dtype} {images.shape}")
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size, self.sampler, self.train = int(batch_size), sampler, bool(train)
        self.drop_last, self.pad_last, self.memory_format = bool(drop_last), bool(pad_last), memory_format
        hwc = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self.images = hwc.permute(0, 3, 1, 2).contiguous()              # ONE uint8 N x 3 x S x S
        del hwc
        self.targets = torch.as_tensor(targets, dtype=torch.long).to(self.device)
        self.dataset = DeviceData(self.images, targets)
        self.normalize = Normalize(self.device, mean, std)
        self.pad, self.crop_flip = pad, CropFlip(pad)
        self.views = bool(views) and self.train

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.targets)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_indices(self):
        """This epoch's indices (the sampler's order) as an int64 tensor on the device."""
        if self.sampler is None:
            return torch.arange(len(self.targets), device=self.device)
        return torch.as_tensor(list(iter(self.sampler)), dtype=torch.long).to(self.device)

    @contextlib.contextmanager
    def _one_thread(self):
        """On the CPU a batch is made on one thread: its ops are small (~0.3 ms for 64 images),
        and a parallel region per op only adds synchronisation; on a loaded machine each region
        waits for a time slice (measured: 2 threads 15-100x slower than 1 under load)."""
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def __iter__(self):
        with self._one_thread():
            order = self.epoch_indices()
            batches = len(self)
            total = min(len(order), batches * self.batch_size)
            if self.train:
                view = draw_views(total, self.device, self.pad)
                dy, dx, flip = view_augmentation(view, self.pad)
        for b in range(batches):
            lo, hi = b * self.batch_size, min(total, (b + 1) * self.batch_size)
            with self._one_thread():
                augment = (dy[lo:hi], dx[lo:hi], flip[lo:hi]) if self.train else None
                batch = self._batch(order[lo:hi], augment)
            yield batch + (view[lo:hi],) if self.views else batch

    def _batch(self, index, augment):
        images = self.images.index_select(0, index)
        if augment is not None:
            images = self.crop_flip(images, *augment)
        if self.memory_format is not torch.contiguous_format:
            images = images.contiguous(memory_format=self.memory_format)
        image, target = self.normalize(images), self.targets.index_select(0, index)
        if self.pad_last and len(index) < self.batch_size:
            image, target, index = self._pad(image, target, index)
        return image, target, index

    def _pad(self, image, target, index):
        short = self.batch_size - len(index)
        image = torch.cat([image, image.new_zeros((short,) + tuple(image.shape[1:]))])
        if self.memory_format is not torch.contiguous_format:
            image = image.contiguous(memory_format=self.memory_format)
        target = torch.cat([target, target.new_full((short,), IGNORE_TARGET)])
        index = torch.cat([index, index.new_full((short,), -1)])
        return image, target, index


def build_fast_loaders(cfg, device, rank=0, world_size=1, test_batch_size=256, views=False, val=False):
    """(train loader, test loader) of cfg's data set on `device`, and the validation loader of the
    images `val_split` holds out when `val` (None when it is 0). The train loader takes this
    rank's shard of EpochSampler(N, cfg.seed, rank, world_size) in batches of
    cfg.batch_size // world_size and drops the last partial batch (`views`: and yields each
    image's view number); the evaluation loaders keep every image, in order, in batches of
    `test_batch_size` (as the plain path's test loader).
    DeviceLoaders for the sets held on the device; JPEG files (ImageNet, ImageFolder trees) are
    decoded on the GPU."""
    from . import EpochSampler, training_parts

    per_rank = cfg.batch_size // world_size
    if per_rank < 1:
        raise UserError(f"batch_size {cfg.batch_size} is smaller than the {world_size} processes: "
                        f"set batch_size {world_size} or more")
    data_set, root = data_spec(cfg), data_root(cfg)
    if not data_set.pad and torch.device(device).type != "cuda":
        raise UserError(f"fast true with {cfg.dataset} decodes the JPEG files on a CUDA GPU; this run is "
                        f"on {torch.device(device).type}: set fast false")
    memory_format = torch.channels_last if cfg.get("channels_last", False) else torch.contiguous_format
    train_split, held = training_parts(cfg)
    evaluated = [data_set.read(root, "test")] + ([held] if val else [])
    sampler = EpochSampler(len(train_split), cfg.seed, rank, world_size)
    if not data_set.pad:
        from .gpu_jpeg import JpegLoader
        shape = dict(size=data_set.image_size, shorter=resize_of(data_set.image_size),
                     mean=data_set.mean, std=data_set.std, memory_format=memory_format)
        loaders = [JpegLoader(train_split, per_rank, device, sampler, train=True, **shape)]
        loaders += [None if split is None else JpegLoader(split, test_batch_size, device, None, train=False, **shape)
                    for split in evaluated]
        return tuple(loaders)
    loaders = []
    for split, batch_size, train in [(train_split, per_rank, True)] + [(s, test_batch_size, False) for s in evaluated]:
        if split is None:
            loaders.append(None)
            continue
        images = split.array()
        if images.shape[1:3] != (data_set.image_size, data_set.image_size):
            raise UserError(f"{cfg.dataset} images are {images.shape[2]}x{images.shape[1]}, expected "
                            f"{data_set.image_size}x{data_set.image_size}")
        loaders.append(DeviceLoader(images, split.targets, batch_size, device, sampler if train else None,
                                    train=train, drop_last=train, memory_format=memory_format,
                                    pad=data_set.pad, mean=data_set.mean, std=data_set.std,
                                    views=views and train))
    return tuple(loaders)
