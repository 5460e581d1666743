"""The fast path's DeviceLoader: torchvision's augmentation distribution and pixels, the plain
test transform exactly, the sampler's order and shards, reproducibility, drop_last and padding."""
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

import dataset
from dataset import EpochSampler
from dataset.cifar100 import MEAN, STD, read_split
from dataset.device_loader import (COMBOS, DeviceLoader, build_fast_loaders, crop_flip,
                                   draw_augmentation, normalize)
from helper.config import get_cfg_defaults


def chi2_critical(df, p):
    """Upper-p critical value of chi-square(df), Wilson-Hilferty's normal approximation
    (accurate to ~0.1% for df > 30: df=161, p=1e-4 gives 236.5; scipy.stats.chi2.isf(1e-4, 161)
    is 236.43)."""
    z = NormalDist().inv_cdf(1 - p)
    a = 2 / (9 * df)
    return df * (1 - a + z * math.sqrt(a)) ** 3


# small df, where Wilson-Hilferty is rougher: the exact values, from scipy.stats.chi2.isf(1e-4, df)
CHI2_8_1E4 = 31.828   # df 8 (9 offsets on one axis), p = 1e-4
CHI2_1_1E4 = 15.137   # df 1 (flip), p = 1e-4: the square of the normal's 1e-4/2 quantile 3.8906


def chi2_statistic(counts):
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def coordinate_images(n):
    """n copies of an image whose R channel is row + 1 and G channel column + 1 (B: 0): a crop
    shows where it was taken and whether it was flipped; padding reads 0."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(1, 33)[:, None]
    image[:, :, 1] = np.arange(1, 33)[None, :]
    return np.repeat(image[None], n, axis=0)


def decode(batch):
    """(dy, dx, flip) of normalised crops of coordinate_images."""
    std = torch.tensor(STD).view(1, 3, 1, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    pixels = ((batch * std + mean) * 255).round().long()
    row = pixels[:, 0, 15, 15] - 1                       # source row of output row 15: 15 + dy - 4
    left, right = pixels[:, 1, 15, 15], pixels[:, 1, 15, 16]
    flip = right < left
    dy = row - 15 + 4
    # unflipped: output column 15 reads source column 15 + dx - 4; flipped: 31 - 15 + dx - 4
    dx = torch.where(flip, left - 1 - 16 + 4, left - 1 - 15 + 4)
    return dy, dx, flip


def plain_transform_at(image, dy, dx, flip):
    """torchvision's train transform with RandomCrop's offset and the flip fixed."""
    picture = TF.crop(TF.pad(Image.fromarray(image), 4), dy, dx, 32, 32)
    if flip:
        picture = TF.hflip(picture)
    return transforms.Normalize(MEAN, STD)(TF.to_tensor(picture))


@pytest.fixture(scope="module")
def random_images():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (200, 32, 32, 3)).astype(np.uint8), rng.randint(0, 100, 200)


def test_chi2_critical_value():
    assert chi2_critical(161, 1e-4) == pytest.approx(236.43, rel=2e-3)
    assert chi2_critical(80, 1e-4) == pytest.approx(135.78, rel=2e-3)


def test_offsets_and_flips_are_uniform():
    """The loader's own crops, decoded, over 162 (dy, dx, flip) cells: chi-square at p = 1e-4
    (df 161), and a biased sample of the same size fails the same test."""
    n, epochs = 4096, 8                                       # 32768 draws, ~202 per cell
    loader = DeviceLoader(coordinate_images(n), np.zeros(n, dtype=np.int64), 512, "cpu",
                          EpochSampler(n, seed=0), train=True)
    torch.manual_seed(0)
    counts = np.zeros(COMBOS, dtype=np.int64)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for image, _, _ in loader:
            dy, dx, flip = decode(image)
            assert dy.min() >= 0 and dy.max() <= 8 and dx.min() >= 0 and dx.max() <= 8
            np.add.at(counts, ((dy * 9 + dx) * 2 + flip.long()).numpy(), 1)
    assert counts.sum() == n * epochs and counts.min() > 0
    critical = chi2_critical(COMBOS - 1, 1e-4)
    assert chi2_statistic(counts) < critical
    cells = counts.reshape(9, 9, 2)
    for marginal in (cells.sum((1, 2)), cells.sum((0, 2))):   # dy, dx
        assert chi2_statistic(marginal) < CHI2_8_1E4
    assert chi2_statistic(cells.sum((0, 1))) < CHI2_1_1E4       # flip
    # power: offset 8 never drawn on the row axis (its mass spread over 0..7)
    biased = counts.reshape(9, 9, 2).copy()
    biased[:8] += biased[8:9] // 8
    biased[8] = 0
    assert chi2_statistic(biased.ravel()) > critical


def test_offset_marginals_are_uniform():
    dy, dx, flip = draw_augmentation(90000, "cpu")
    assert chi2_statistic(np.bincount(dy.numpy(), minlength=9)) < CHI2_8_1E4
    assert chi2_statistic(np.bincount(dx.numpy(), minlength=9)) < CHI2_8_1E4
    assert abs(flip.float().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(90000)


def test_crop_equals_torchvision_at_every_offset_and_flip(random_images):
    images, _ = random_images
    cells = torch.arange(COMBOS)
    dy, dx, flip = cells // 18, (cells // 2) % 9, (cells % 2).bool()
    picks = np.arange(COMBOS) % len(images)
    batch = torch.from_numpy(images[picks]).permute(0, 3, 1, 2)
    ours = normalize(crop_flip(batch, dy, dx, flip))
    reference = torch.stack([plain_transform_at(images[p], int(a), int(b), bool(f))
                             for p, a, b, f in zip(picks, dy, dx, flip)])
    assert ours.shape == reference.shape == (COMBOS, 3, 32, 32) and ours.dtype == torch.float32
    assert (ours - reference).abs().max().item() <= 1e-6
    assert torch.equal(ours, reference)  # on the CPU the arithmetic is the same, op for op


def test_loader_applies_its_global_rng_draws(random_images):
    images, targets = random_images
    sampler = EpochSampler(len(images), seed=5)
    loader = DeviceLoader(images, targets, 64, "cpu", sampler, train=True)
    torch.manual_seed(11)
    batches = list(loader)
    torch.manual_seed(11)
    dy, dx, flip = draw_augmentation(len(loader) * 64, "cpu")
    order = sampler.permutation()
    for b, (image, target, index) in enumerate(batches):
        expect = order[b * 64:(b + 1) * 64]
        assert torch.equal(index, expect) and torch.equal(target, torch.as_tensor(targets)[expect])
        assert image.is_contiguous() and image.shape == (64, 3, 32, 32) and image.dtype == torch.float32
        sl = slice(b * 64, (b + 1) * 64)
        raw = torch.from_numpy(images[expect.numpy()]).permute(0, 3, 1, 2)
        assert torch.equal(image, normalize(crop_flip(raw, dy[sl], dx[sl], flip[sl])))
        k = 7
        assert torch.equal(image[k], plain_transform_at(images[int(expect[k])], int(dy[b * 64 + k]),
                                                        int(dx[b * 64 + k]), bool(flip[b * 64 + k])))


def test_eval_batches_equal_the_plain_test_loader(synthetic_dir):
    cfg = get_cfg_defaults()
    cfg.data_dir = synthetic_dir
    plain = dataset.build_test_loader(cfg, batch_size=64, num_workers=0)
    images, targets = read_split(synthetic_dir, "test")
    fast = DeviceLoader(images, targets, 64, "cpu", None, train=False, drop_last=False)
    assert len(fast) == len(plain) == 4                     # 200 images: 64, 64, 64, 8
    count = 0
    for (a, ta, ia), (b, tb, ib) in zip(fast, plain):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
        assert torch.equal(ta, tb) and torch.equal(ia, ib) and ta.dtype == ia.dtype == torch.int64
        count += len(ta)
    assert count == 200


def test_every_index_once_per_epoch_and_drop_last(random_images):
    images, targets = random_images                         # 200 images
    keep = DeviceLoader(images, targets, 64, "cpu", EpochSampler(200, seed=1), drop_last=False)
    drop = DeviceLoader(images, targets, 64, "cpu", EpochSampler(200, seed=1), drop_last=True)
    assert len(keep) == 4 and len(drop) == 3
    for epoch in (0, 1):
        keep.sampler.set_epoch(epoch), drop.sampler.set_epoch(epoch)
        sizes = [len(index) for _, _, index in keep]
        seen = torch.cat([index for _, _, index in keep])
        assert sizes == [64, 64, 64, 8] and sorted(seen.tolist()) == list(range(200))
        dropped = [index for _, _, index in drop]
        assert [len(i) for i in dropped] == [64, 64, 64]
        assert torch.cat(dropped).tolist() == list(drop.sampler)[:192]


def test_two_rank_shards_partition_the_epoch(random_images):
    images, targets = random_images
    shards = [DeviceLoader(images, targets, 32, "cpu", EpochSampler(200, seed=3, rank=r, world_size=2),
                           drop_last=False) for r in range(2)]
    for shard in shards:
        shard.sampler.set_epoch(2)
    seen = [torch.cat([index for _, _, index in shard]).tolist() for shard in shards]
    assert len(seen[0]) == len(seen[1]) == 100
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(200))


def test_same_seed_same_batches(random_images):
    images, targets = random_images

    def epoch(rng_seed, epoch_number, sampler_seed=0):
        loader = DeviceLoader(images, targets, 50, "cpu", EpochSampler(200, seed=sampler_seed))
        loader.sampler.set_epoch(epoch_number)
        torch.manual_seed(rng_seed)
        return list(loader)

    a, b = epoch(1, 3), epoch(1, 3)
    assert all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))
    other_rng = epoch(2, 3)                                  # same order, other crops
    assert all(torch.equal(p[2], q[2]) for p, q in zip(a, other_rng))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, other_rng))
    other_epoch = epoch(1, 4)
    assert not all(torch.equal(p[2], q[2]) for p, q in zip(a, other_epoch))


def test_pad_last_masks_the_padding(random_images):
    images, targets = random_images
    exact = list(DeviceLoader(images, targets, 64, "cpu", None, train=False, drop_last=False))
    padded = list(DeviceLoader(images, targets, 64, "cpu", None, train=False, drop_last=False,
                               pad_last=True))
    assert [len(t) for _, t, _ in padded] == [64] * 4
    image, target, index = padded[-1]
    valid = index >= 0
    assert valid.sum() == 8 and torch.equal(image[valid], exact[-1][0])
    assert torch.equal(target[valid], exact[-1][1]) and (target[~valid] == -100).all()
    logits = torch.randn(64, 100)
    assert torch.nn.functional.cross_entropy(logits, target, reduction="sum").item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:8], exact[-1][1], reduction="sum").item(), rel=1e-6)


def test_channels_last_output_has_the_same_values(random_images):
    images, targets = random_images
    loaders = [DeviceLoader(images, targets, 64, "cpu", EpochSampler(200, seed=0), memory_format=f)
               for f in (torch.contiguous_format, torch.channels_last)]
    batches = []
    for loader in loaders:
        torch.manual_seed(0)
        batches.append(next(iter(loader))[0])
    assert batches[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batches[0], batches[1])


def test_build_fast_loaders(synthetic_dir):
    cfg = get_cfg_defaults()
    cfg.data_dir, cfg.batch_size, cfg.seed = synthetic_dir, 64, 4
    train, test = build_fast_loaders(cfg, torch.device("cpu"))
    images, targets = read_split(synthetic_dir, "train")
    assert isinstance(train.dataset.targets, np.ndarray) and np.array_equal(train.dataset.targets, targets)
    assert len(train) == 600 // 64 and len(test) == 1 and train.sampler.seed == 4
    train.sampler.set_epoch(2)
    image, target, index = next(iter(train))
    assert image.shape == (64, 3, 32, 32) and index.tolist() == list(train.sampler)[:64]
    assert train.images.dtype == torch.uint8 and train.images.shape == (600, 3, 32, 32)
    shards = [build_fast_loaders(cfg, "cpu", rank=r, world_size=2)[0] for r in range(2)]
    assert [s.batch_size for s in shards] == [32, 32] and len(shards[0]) == 300 // 32
    for s in shards:
        s.sampler.set_epoch(1)
    a, b = (set(torch.cat([i for _, _, i in s]).tolist()) for s in shards)
    assert not a & b and len(a) == len(b) == 288


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4), 2, "cpu")
    with pytest.raises(ValueError, match="targets"):
        DeviceLoader(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3), 2, "cpu")
