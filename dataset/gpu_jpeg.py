"""ImageNet's fast path (`fast: true`): JPEG files decoded on the GPU, augmented there.

`JpegLoader` stands in for the plain DataLoader as `DeviceLoader` does (dataset/device_loader.py):
iterating yields (image float32 B x 3 x 224 x 224 normalised, target int64, index int64) on the
device; `len()`, `.sampler` and `.dataset.targets` as there. Per batch, the files' bytes are
read by a few threads (the next batch's while this one is decoded), decoded in one call of
`torchvision.io.decode_jpeg(..., device=device)` (nvJPEG on CUDA; a file nvJPEG refuses, such as
ImageNet's few CMYK or PNG-in-JPEG files, is decoded by PIL instead) and transformed per image
on the device:

- training: RandomResizedCrop(224) + RandomHorizontalFlip with torchvision's distribution. The
  crop box comes from `resized_crop_params`, which draws exactly as torchvision's
  `RandomResizedCrop.get_params` does (scale 0.08..1, log-uniform aspect ratio 3/4..4/3, ten
  tries, then the central fallback), then the flip as `RandomHorizontalFlip` (rand < 0.5), from
  a generator seeded by one draw of torch's global RNG when iteration starts (the loop re-seeds
  that per epoch: reproducible). The box is resized to 224 x 224 by antialiased bilinear
  interpolation, rounded to uint8 as PIL's resize is; the last partial batch is dropped.
- test: Resize(256) (the shorter side to 256, the longer scaled and truncated as torchvision)
  + CenterCrop(224); every image, in order.

Then ToTensor + Normalize's arithmetic with ImageNet's mean and std. PIL's and torch's
antialiased bilinear resampling differ by about one grey level, so pixels are close to the
plain path's, not equal; the crop and flip distribution is the same.
"""
import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from . import imagenet
from .device_loader import Normalize

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def resized_crop_params(height, width, generator, scale=SCALE, ratio=RATIO):
    """(top, left, h, w) of a random crop of a height x width image: the same draws from
    `generator` as torchvision's RandomResizedCrop.get_params makes from the global RNG."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, (1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, (1,), generator=generator).item()
            return top, left, h, w
    # ten misses: the whole image, cut to the nearest allowed aspect ratio, centred
    h, w = height, width
    if width / height < min(ratio):
        h = int(round(width / min(ratio)))
    elif width / height > max(ratio):
        w = int(round(height * max(ratio)))
    return (height - h) // 2, (width - w) // 2, h, w


def resize(image, size):
    """uint8 C x H x W -> uint8 C x size[0] x size[1], antialiased bilinear, rounded."""
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def train_view(image, generator, size=imagenet.SIZE):
    top, left, h, w = resized_crop_params(image.shape[1], image.shape[2], generator)
    out = resize(image[:, top:top + h, left:left + w], (size, size))
    if torch.rand(1, generator=generator) < 0.5:
        out = out.flip(-1)
    return out


def test_view(image, size=imagenet.SIZE, shorter=imagenet.RESIZE):
    height, width = image.shape[1:]
    if height <= width:
        new = (shorter, int(shorter * width / height))
    else:
        new = (int(shorter * height / width), shorter)
    out = resize(image, new)
    top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return out[:, top:top + size, left:left + size]


def read_bytes(path):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def decode(files, device):
    """uint8 3 x H x W RGB images on `device` of the encoded `files` (uint8 CPU tensors)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    try:
        return decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return [decode_one(data, device) for data in files]


def decode_one(data, device):
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        picture = Image.open(io.BytesIO(data.numpy().tobytes())).convert("RGB")
        return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).to(device)


class JpegLoader:
    """A DataLoader-like iterator over ImageFiles, decoded and transformed on `device` (see the
    module docstring). sampler: this rank's indices of the epoch (EpochSampler), None: in order;
    train: random resized crop + flip to `size`, last partial batch dropped; else resize of the
    shorter side to `shorter` + centre crop to `size`; normalised with `mean` and `std`."""

    def __init__(self, files, batch_size, device, sampler=None, train=True,
                 memory_format=torch.contiguous_format, readers=8, size=imagenet.SIZE, shorter=imagenet.RESIZE,
                 mean=imagenet.MEAN, std=imagenet.STD):
        self.dataset, self.batch_size, self.device = files, int(batch_size), torch.device(device)
        self.sampler, self.train, self.memory_format, self.readers = sampler, bool(train), memory_format, readers
        self.size, self.shorter = size, shorter
        self.normalize = Normalize(self.device, mean, std)

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self):
        order = list(self.sampler) if self.sampler is not None else list(range(len(self.dataset)))
        batches = [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]
        generator = None
        if self.train:
            generator = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,)).item()))
        with ThreadPoolExecutor(self.readers) as pool:
            def fetch(batch):    # submits the reads now, in the background; list() waits for them
                return pool.map(read_bytes, [self.dataset.paths[i] for i in batch])
            pending = fetch(batches[0]) if batches else None
            for b, batch in enumerate(batches):
                files = list(pending)
                pending = fetch(batches[b + 1]) if b + 1 < len(batches) else None
                yield self._batch(batch, decode(files, self.device), generator)

    def _batch(self, batch, images, generator):
        if self.train:
            views = [train_view(image, generator, self.size) for image in images]
        else:
            views = [test_view(image, self.size, self.shorter) for image in images]
        image = self.normalize(torch.stack(views)).contiguous(memory_format=self.memory_format)
        index = torch.as_tensor(batch, dtype=torch.long)
        target = torch.as_tensor(self.dataset.targets[index.numpy()])
        return image, target.to(self.device), index.to(self.device)
