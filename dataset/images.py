"""A split's images, in memory or as files, and the training item (image, target, index).

`ImageArray` holds a split decoded in memory (the CIFAR sets); `ImageFiles` a list of image
files read when asked (Tiny-ImageNet, ImageNet). Both give `targets` (numpy int64),
`load(i)` (an RGB PIL image), `array()` (every image as one uint8 N x H x W x 3 array, for
the fast path's device-resident copy) and `subset(indices)` (those images, in that order).
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from common.errors import UserError


class ImageArray:
    def __init__(self, images, targets):
        self.images, self.targets = images, np.asarray(targets, dtype=np.int64)

    def __len__(self):
        return len(self.targets)

    def load(self, i):
        return Image.fromarray(self.images[i])

    def subset(self, indices):
        return ImageArray(self.images[indices], self.targets[indices])

    def array(self):
        return self.images


class ImageFiles:
    def __init__(self, paths, targets):
        self.paths, self.targets = list(paths), np.asarray(targets, dtype=np.int64)

    def __len__(self):
        return len(self.targets)

    def subset(self, indices):
        return ImageFiles([self.paths[i] for i in indices], self.targets[indices])

    def load(self, i):
        path = self.paths[i]
        try:
            with open(path, "rb") as f:
                return Image.open(f).convert("RGB")
        except OSError as e:
            raise UserError(f"cannot read image {path} ({type(e).__name__}: {e})") from None

    def array(self):
        """Every image decoded into one uint8 N x H x W x 3 array (by a thread per core: PIL
        decodes without the GIL); all must have one size."""
        first = np.asarray(self.load(0))
        out = np.empty((len(self),) + first.shape, dtype=np.uint8)

        def put(i):
            image = np.asarray(self.load(i))
            if image.shape != first.shape:
                raise UserError(f"image {self.paths[i]} is {image.shape[1]}x{image.shape[0]}, "
                                f"{self.paths[0]} is {first.shape[1]}x{first.shape[0]}: the fast "
                                f"path needs one size; set fast false")
            out[i] = image
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for _ in pool.map(put, range(len(self))):
                pass
        return out


class IndexedImages(torch.utils.data.Dataset):
    """Items (transform(image), target, index): CRD needs each sample's index."""

    def __init__(self, split, transform):
        self.split, self.transform = split, transform
        self.targets = split.targets

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        return self.transform(self.split.load(index)), int(self.targets[index]), index
