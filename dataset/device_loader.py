"""The fast path's data (`fast: true`): the whole split on the training device, augmented in batches.

`DeviceLoader` stands in for the plain torch DataLoader in the loop: iterating yields
(image float32 B x 3 x 32 x 32 normalised, target int64, index int64), all on the device;
`len()` is the number of batches, `.sampler` is the EpochSampler (`set_epoch` works) and
`.dataset.targets` the numpy labels.

The split is ONE uint8 tensor N x 3 x 32 x 32 on the device (CIFAR-100's 50000 training images:
154 MB). A training batch is gathered by the sampler's indices, then RandomCrop(32, padding=4)
and RandomHorizontalFlip are applied to the whole batch at once, with torchvision's
distribution: each of the 81 offsets (0..8 x 0..8 in the zero-padded 40 x 40 image) and each
flip equally likely, independently per image. The zero padding is the uint8 value 0 BEFORE
normalisation, as torchvision pads the PIL image. Crop and flip are one gather: the batch is
written into the centre of a zeroed (2B, 3, 40, 40) buffer, images 0..B-1 as they are and
B..2B-1 mirrored; an `as_strided` view whose first index is an element offset into that buffer
(stride 1) then turns every crop into a single row of `index_select` (a flipped crop at column
offset dx is the mirrored image's crop at 8 - dx). Normalisation is ToTensor's and Normalize's
arithmetic, op for op (x / 255, - mean, / std), so a crop equals torchvision's bit for bit on
the CPU (on CUDA PyTorch divides by a scalar as a multiplication by its reciprocal: within an
ulp).

On the CPU the batches are made with one intra-op thread (restored before each batch is
yielded): the ops are small, and parallel regions only add synchronisation, which on a shared,
loaded machine costs a time slice per op.

The random draws come from torch's global RNG on the loader's device, one `randint` over the
162 (offset, flip) combinations for the whole epoch, when iteration starts: the loop's
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

from .cifar100 import MEAN, STD, read_split

PAD = 4
SIZE = 32
PADDED = SIZE + 2 * PAD                # 40
OFFSETS = PADDED - SIZE + 1            # 9 offsets per axis
COMBOS = OFFSETS * OFFSETS * 2         # 162 (dy, dx, flip) combinations
IGNORE_TARGET = -100                   # F.cross_entropy's default ignore_index


def draw_augmentation(n, device):
    """(dy, dx, flip) for n images from the global RNG of `device`: dy, dx int64 in 0..8 (the
    crop's top-left corner in the zero-padded 40 x 40 image), flip bool; all 162 combinations
    equally likely, as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip()."""
    r = torch.randint(0, COMBOS, (n,), device=device)
    return r // (2 * OFFSETS), (r // 2) % OFFSETS, (r % 2).bool()


class CropFlip:
    """Batched RandomCrop(32, padding=4) + horizontal flip of uint8 N x 3 x 32 x 32 images at
    given offsets; keeps its zero-bordered work buffer between calls (borders are never written)."""

    def __init__(self):
        self.buffer = None

    def _buffer(self, n, like):
        if (self.buffer is None or self.buffer.shape[0] < 2 * n or self.buffer.device != like.device
                or self.buffer.shape[1] != like.shape[1]):
            self.buffer = torch.zeros(2 * n, like.shape[1], PADDED, PADDED, dtype=torch.uint8,
                                      device=like.device)
        return self.buffer[:2 * n]

    def __call__(self, images, dy, dx, flip):
        n, c = images.shape[0], images.shape[1]
        if images.dtype != torch.uint8 or images.shape[2:] != (SIZE, SIZE):
            raise ValueError(f"expected uint8 images N x C x {SIZE} x {SIZE}, got {images.dtype} "
                             f"{tuple(images.shape)}")
        if n == 0:
            return images.clone()
        buf = self._buffer(n, images)
        buf[:n, :, PAD:PAD + SIZE, PAD:PAD + SIZE] = images
        buf[n:, :, PAD:PAD + SIZE, PAD:PAD + SIZE] = images.flip(-1)
        image_size = c * PADDED * PADDED
        span = (c - 1) * PADDED * PADDED + (SIZE - 1) * PADDED + SIZE   # elements one crop spans
        # crop k of the view starts at element k of buf: (channel, row, column) strides of buf
        crops = buf.as_strided((buf.numel() - span + 1, c, SIZE, SIZE),
                               (1, PADDED * PADDED, PADDED, 1))
        which = torch.arange(n, device=images.device) + n * flip.long()
        column = torch.where(flip, (OFFSETS - 1) - dx, dx)
        start = which * image_size + dy * PADDED + column
        return crops.index_select(0, start)


def crop_flip(images, dy, dx, flip):
    """uint8 images cropped at (dy, dx) of their zero-padded 40 x 40 version, then mirrored
    where `flip`: torchvision's pad(4) -> crop(dy, dx, 32, 32) -> hflip, for a whole batch."""
    return CropFlip()(images, dy, dx, flip)


class Normalize:
    """uint8 N x 3 x H x W -> float32 (x / 255 - MEAN) / STD: ToTensor + Normalize, op for op."""

    def __init__(self, device, mean=MEAN, std=STD):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)

    def __call__(self, images):
        # uint8 / 255 computes in float32: the same values as ToTensor's .float().div(255)
        return torch.div(images, 255).sub_(self.mean).div_(self.std)


def normalize(images):
    return Normalize(images.device)(images)


class DeviceData:
    """The loader's `.dataset`: the images on the device and the numpy labels."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.targets)


class DeviceLoader:
    """A DataLoader-like iterator over a split held on `device` (see the module docstring).

    images: uint8 numpy N x 32 x 32 x 3 (read_split's layout); targets: numpy int labels (N);
    sampler: yields this rank's indices of the epoch (EpochSampler), None: 0..N-1 in order;
    train: random crop + flip; drop_last: drop the last partial batch; pad_last: pad it instead
    (index -1, target -100); memory_format: of the yielded images (torch.channels_last or
    torch.contiguous_format)."""

    def __init__(self, images, targets, batch_size, device, sampler=None, train=True, drop_last=True,
                 pad_last=False, memory_format=torch.contiguous_format):
        images = np.asarray(images)
        targets = np.asarray(targets)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
            raise ValueError(f"expected uint8 images N x {SIZE} x {SIZE} x 3, got {images.dtype} {images.shape}")
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size, self.sampler, self.train = int(batch_size), sampler, bool(train)
        self.drop_last, self.pad_last, self.memory_format = bool(drop_last), bool(pad_last), memory_format
        hwc = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self.images = hwc.permute(0, 3, 1, 2).contiguous()              # ONE uint8 N x 3 x 32 x 32
        del hwc
        self.targets = torch.as_tensor(targets, dtype=torch.long).to(self.device)
        self.dataset = DeviceData(self.images, targets)
        self.normalize = Normalize(self.device)
        self.crop_flip = CropFlip()

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
                dy, dx, flip = draw_augmentation(total, self.device)
        for b in range(batches):
            lo, hi = b * self.batch_size, min(total, (b + 1) * self.batch_size)
            with self._one_thread():
                augment = (dy[lo:hi], dx[lo:hi], flip[lo:hi]) if self.train else None
                batch = self._batch(order[lo:hi], augment)
            yield batch

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


def build_fast_loaders(cfg, device, rank=0, world_size=1, test_batch_size=256):
    """(train DeviceLoader, test DeviceLoader) of cfg.data_dir on `device`. The train loader takes
    this rank's shard of EpochSampler(N, cfg.seed, rank, world_size) in batches of
    cfg.batch_size // world_size and drops the last partial batch; the test loader keeps every
    image, in order, in batches of `test_batch_size` (as the plain path's test loader)."""
    from . import EpochSampler

    per_rank = cfg.batch_size // world_size
    if per_rank < 1:
        raise UserError(f"batch_size {cfg.batch_size} is smaller than the {world_size} processes: "
                        f"set batch_size {world_size} or more")
    memory_format = torch.channels_last if cfg.get("channels_last", False) else torch.contiguous_format
    images, targets = read_split(cfg.data_dir, "train")
    sampler = EpochSampler(len(images), cfg.seed, rank, world_size)
    train = DeviceLoader(images, targets, per_rank, device, sampler, train=True, drop_last=True,
                         memory_format=memory_format)
    images, targets = read_split(cfg.data_dir, "test")
    test = DeviceLoader(images, targets, test_batch_size, device, None, train=False, drop_last=False,
                        memory_format=memory_format)
    return train, test
