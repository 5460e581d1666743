"""timm's transforms (`transform timm`), built as timm's train.py builds them: `create_transform` at
`input_size`, with the data set's mean and std.

Training: RandomResizedCropAndInterpolation to input_size (scale 0.08-1, ratio 3/4-4/3, the
`train_interpolation`), a flip, `auto_augment` (RandAugment, AutoAugment or AugMix by timm's string)
or else `color_jitter`, normalisation, then random erasing (`reprob`, `remode`). Test: a resize to
input_size / crop_pct (`interpolation`), a centre crop, normalisation. A CIFAR image (32 pixels)
is so resized to input_size, as OFA-KD's CIFAR runs do (224: an ImageNet-sized model's input).
The run's data spec then says input_size as its image size: the models are built for it. The fast
path's batched crop and flip do not make these: `fast` is refused with them (helper/config.py).
"""
import dataclasses

from common.errors import UserError


def check_augment(text):
    """A one-line refusal of an augmentation string timm cannot parse (empty: none)."""
    if not text:
        return
    from timm.data import create_transform
    try:
        create_transform(32, is_training=True, auto_augment=text)
    except (AssertionError, ValueError, KeyError, IndexError) as e:
        raise UserError(f"auto_augment '{text}' is not an augmentation timm knows ({str(e) or type(e).__name__}): "
                        f"e.g. rand-m9-mstd0.5-inc1 (RandAugment), original (AutoAugment), augmix-m5-w4-d2") from None


def with_timm_transforms(spec, cfg):
    """`spec` (a DataSpec) with timm's transforms at cfg.input_size (0: the data set's size)."""
    from timm.data import create_transform
    size = cfg.input_size or spec.image_size

    def train_transform():
        return create_transform(size, is_training=True, color_jitter=cfg.color_jitter,
                                auto_augment=cfg.auto_augment or None, interpolation=cfg.train_interpolation,
                                mean=tuple(spec.mean), std=tuple(spec.std), re_prob=cfg.reprob, re_mode=cfg.remode)

    def test_transform():
        return create_transform(size, is_training=False, interpolation=cfg.interpolation, mean=tuple(spec.mean),
                                std=tuple(spec.std), crop_pct=cfg.crop_pct)

    return dataclasses.replace(spec, image_size=size, train_transform=train_transform,
                               test_transform=test_transform, pad=0)
