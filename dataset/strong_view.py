"""The strong view of an image for methods that train on two views (MLKD): the data set's own
training transform with RandAugment applied to the PIL image before it becomes a tensor.

RandAugment is MLKD's (Jin et al., CVPR 2023; the FixMatch-style one of its
`mdistiller/dataset/cifar100.py`, not torchvision's): 2 operations drawn with replacement from the
14 below (`random.choices`), each at a magnitude drawn uniformly from its range (`random.random`),
then a Cutout of a square of side U(0, 0.5) x width, grey (125, 123, 114), at a corner drawn as the
original draws it, `np.random.uniform(width)`: a low of `width` and the default high of 1, i.e. in
(1, width], less half the side. The magnitude argument of the original (10) is unused there and is
not taken here. Drawn from the same python and numpy RNG streams in the same order, the same seeds
give the same images (tests/test_mlkd.py).
"""
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision import transforms as T


def _affine(img, coefficients):
    return img.transform(img.size, Image.AFFINE, coefficients)


OPERATIONS = (  # (name, apply(img, magnitude), low, high)
    ("AutoContrast", lambda img, v: ImageOps.autocontrast(img), 0, 1),
    ("Brightness", lambda img, v: ImageEnhance.Brightness(img).enhance(v), 0.05, 0.95),
    ("Color", lambda img, v: ImageEnhance.Color(img).enhance(v), 0.05, 0.95),
    ("Contrast", lambda img, v: ImageEnhance.Contrast(img).enhance(v), 0.05, 0.95),
    ("Equalize", lambda img, v: ImageOps.equalize(img), 0, 1),
    ("Identity", lambda img, v: img, 0, 1),
    ("Posterize", lambda img, v: ImageOps.posterize(img, max(1, int(v))), 4, 8),
    ("Rotate", lambda img, v: img.rotate(v), -30, 30),
    ("Sharpness", lambda img, v: ImageEnhance.Sharpness(img).enhance(v), 0.05, 0.95),
    ("ShearX", lambda img, v: _affine(img, (1, v, 0, 0, 1, 0)), -0.3, 0.3),
    ("ShearY", lambda img, v: _affine(img, (1, 0, 0, v, 1, 0)), -0.3, 0.3),
    ("Solarize", lambda img, v: ImageOps.solarize(img, v), 0, 256),
    ("TranslateX", lambda img, v: _affine(img, (1, 0, v * img.size[0], 0, 1, 0)), -0.3, 0.3),
    ("TranslateY", lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1])), -0.3, 0.3),
)
CUTOUT_GREY = (125, 123, 114)


class RandAugment:
    """`n` operations, then a Cutout (see the module's docstring); `last` holds what was drawn:
    [(name, magnitude), ..., ("Cutout", fraction)]."""

    def __init__(self, n=2):
        self.n, self.last = n, []

    def __call__(self, img):
        self.last = []
        for name, apply, low, high in random.choices(OPERATIONS, k=self.n):
            magnitude = low + float(high - low) * random.random()
            img = apply(img, magnitude)
            self.last.append((name, magnitude))
        fraction = random.random() * 0.5
        self.last.append(("Cutout", fraction))
        return cutout(img, fraction * img.size[0]) if fraction > 0 else img


def cutout(img, side):
    width, height = img.size
    x0, y0 = np.random.uniform(width), np.random.uniform(height)
    x0, y0 = int(max(0, x0 - side / 2.0)), int(max(0, y0 - side / 2.0))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, min(width, x0 + side), min(height, y0 + side)), CUTOUT_GREY)
    return img


def strong(transform):
    """`transform` (a Compose ending in ToTensor and Normalize) with RandAugment before ToTensor."""
    steps = list(getattr(transform, "transforms", ()))
    at = next((i for i, step in enumerate(steps) if isinstance(step, T.ToTensor)), None)
    if at is None:
        raise ValueError("the data set's training transform has no ToTensor step to put RandAugment before")
    return T.Compose(steps[:at] + [RandAugment(2)] + steps[at:])


class TwoViews:
    """image -> (2, C, H, W): the weak view (the training transform) then the strong one."""

    def __init__(self, transform):
        self.weak, self.strong = transform, strong(transform)

    def __call__(self, img):
        import torch
        return torch.stack([self.weak(img), self.strong(img)])


def collate_views(batch):
    """Samples of (2, C, H, W) images -> one (2B, C, H, W) batch: the B weak views, then the B
    strong ones (one tensor, so the loop moves it as any batch)."""
    import torch
    images, targets, indices = torch.utils.data.default_collate(batch)
    return torch.cat([images[:, 0], images[:, 1]]), targets, indices
