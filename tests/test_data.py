"""CIFAR-100 format reader, synthetic data set, download path, sampler."""
import functools
import hashlib
import http.server
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch

import dataset
from dataset import cifar100
from dataset.cifar100 import read_split
from dataset.images import ImageArray, IndexedImages
from dataset.synthetic import write_synthetic_cifar100
from common.errors import UserError
from helper.config import get_cfg_defaults


def test_synthetic_files_have_cifar100_format(synthetic_dir):
    with open(os.path.join(synthetic_dir, "cifar-100-python", "train"), "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert set(entry) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (600, 3072)
    assert len(entry["fine_labels"]) == 600 and max(entry["fine_labels"]) == 99
    with open(os.path.join(synthetic_dir, "cifar-100-python", "meta"), "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert len(meta["fine_label_names"]) == 100


def test_reader_agrees_with_torchvision(synthetic_dir, monkeypatch):
    from torchvision.datasets import CIFAR100, cifar
    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)  # ours lack the official md5
    reference = CIFAR100(synthetic_dir, train=False, download=False)
    images, labels = read_split(synthetic_dir, "test")
    assert np.array_equal(images, reference.data)
    assert labels.tolist() == reference.targets


def test_synthetic_is_learnable(synthetic_dir):
    """A nearest-class-mean classifier on raw pixels is far above chance (1%)."""
    x, y = read_split(synthetic_dir, "train")
    xt, yt = read_split(synthetic_dir, "test")
    x, xt = x.reshape(len(x), -1).astype(np.float32), xt.reshape(len(xt), -1).astype(np.float32)
    means = np.stack([x[y == c].mean(0) for c in range(100)])
    pred = ((xt[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() > 0.3


def test_synthetic_is_reused_and_deterministic(tmp_path):
    write_synthetic_cifar100(str(tmp_path / "a"), 200, 100, seed=3)
    write_synthetic_cifar100(str(tmp_path / "b"), 200, 100, seed=3)
    a, b = read_split(str(tmp_path / "a"), "train"), read_split(str(tmp_path / "b"), "train")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    path = tmp_path / "a" / "cifar-100-python" / "train"
    stamp = path.stat().st_mtime_ns
    write_synthetic_cifar100(str(tmp_path / "a"), 200, 100, seed=3)
    assert path.stat().st_mtime_ns == stamp


def test_corrupt_and_empty_files_are_user_errors(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(UserError, match="cannot read CIFAR-100 file"):
        read_split(str(tmp_path), "train")
    with pytest.raises(UserError, match="missing CIFAR-100 file"):
        read_split(str(tmp_path), "test")


def _serve(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_through_http(tmp_path, synthetic_dir, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    archive = served / cifar100.FILES.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(os.path.join(synthetic_dir, "cifar-100-python"), arcname="cifar-100-python")
    server = _serve(served)
    try:
        monkeypatch.setattr(cifar100.FILES, "url", f"http://127.0.0.1:{server.server_port}/{cifar100.FILES.archive}")
        monkeypatch.setattr(cifar100.FILES, "archive_md5", hashlib.md5(archive.read_bytes()).hexdigest())
        cfg = get_cfg_defaults()
        cfg.data_dir = str(tmp_path / "data")
        dataset.prepare_data(cfg)
        loader = dataset.build_test_loader(cfg, batch_size=50)
        image, target, index = next(iter(loader))
        assert image.shape == (50, 3, 32, 32) and index.tolist() == list(range(50))
    finally:
        server.shutdown()


def test_failed_download_says_where_to_put_the_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar100.FILES, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    with pytest.raises(UserError) as err:
        cifar100.ensure_cifar100(str(tmp_path), download=True)
    assert "127.0.0.1:9" in str(err.value) and "cifar-100-python.tar.gz" in str(err.value)
    with pytest.raises(UserError, match="download is off"):
        cifar100.ensure_cifar100(str(tmp_path), download=False)


def test_failed_download_leaves_no_empty_folder_it_made(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar100.FILES, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    root = tmp_path / "data" / "cifar100"
    with pytest.raises(UserError, match="127.0.0.1:9"):
        cifar100.ensure_cifar100(str(root), download=True)
    assert os.listdir(tmp_path) == []          # neither data/cifar100/ nor data/
    root.mkdir(parents=True)                   # a folder of the user's, even empty, stays
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        cifar100.ensure_cifar100(str(root / "sub"), download=True)
    assert sorted(os.listdir(tmp_path / "data")) == ["cifar100", "notes.txt"] and os.listdir(root) == []


def test_epoch_sampler_orders_and_shards():
    a, b = dataset.EpochSampler(100, seed=1), dataset.EpochSampler(100, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(100))
    b.set_epoch(4)
    assert list(a) != list(b)
    ranks = [dataset.EpochSampler(101, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    shards = [list(r) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 51  # padded by wrapping around
    assert sorted(shards[0] + shards[1][:-1]) == list(range(101))
    assert torch.equal(ranks[0].permutation(), ranks[1].permutation())


def test_train_items_carry_indices(synthetic_dir):
    images, targets = read_split(synthetic_dir, "train")
    data = IndexedImages(ImageArray(images, targets), cifar100.train_transform())
    image, target, index = data[7]
    assert image.shape == (3, 32, 32) and target == targets[7] and index == 7
