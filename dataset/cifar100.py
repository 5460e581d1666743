"""CIFAR-100 in torchvision's on-disk format: reader, download, transforms, data sets.

The format (`<root>/cifar-100-python/{train,test,meta}`) is a pickled dict per split with
`data` (N x 3072 uint8, channel-major rows of 32x32 images), `fine_labels`, `coarse_labels`,
`filenames` and `batch_label`. torchvision downloads and checks the archive; reading is ours
(torchvision's CIFAR100 class insists on the official files' md5, which the synthetic set lacks).
"""
import os
import pickle

import numpy as np
import torch
from PIL import Image

from common.errors import UserError

BASE_FOLDER = "cifar-100-python"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
NUM_CLASSES = 100


def split_path(root, split):
    return os.path.join(root, BASE_FOLDER, split)


def is_present(root):
    return all(os.path.isfile(split_path(root, s)) for s in ("train", "test"))


def ensure_cifar100(root, download=True):
    """Make sure `root/cifar-100-python/` exists, downloading the archive when allowed."""
    if is_present(root):
        return
    where = (f"put {ARCHIVE} (from {URL}) into {os.path.abspath(root)}/ "
             f"or extract it there so that {os.path.abspath(split_path(root, 'train'))} exists")
    if not download:
        raise UserError(f"CIFAR-100 not found in {root} and download is off: {where}")
    from torchvision.datasets.utils import download_and_extract_archive  # slow import: only here
    try:
        download_and_extract_archive(URL, root, filename=ARCHIVE, md5=ARCHIVE_MD5)
    except Exception as e:  # urllib, socket, tarfile and md5 errors all mean the same to the user
        raise UserError(f"CIFAR-100 download from {URL} failed ({type(e).__name__}: {e}); {where}") from None
    if not is_present(root):
        raise UserError(f"the CIFAR-100 archive did not contain {BASE_FOLDER}/train and test; {where}")


def read_split(root, split):
    """(images uint8 N x 32 x 32 x 3, fine labels int64 N) of split 'train' or 'test'."""
    path = split_path(root, split)
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    except FileNotFoundError:
        raise UserError(f"missing CIFAR-100 file {path}") from None
    except Exception as e:
        raise UserError(f"cannot read CIFAR-100 file {path} ({type(e).__name__}: {e}); "
                        f"delete {os.path.dirname(path)} to download it again") from None
    if len(data) == 0 or len(data) != len(labels):
        raise UserError(f"CIFAR-100 file {path} holds {len(data)} images and {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise UserError(f"CIFAR-100 file {path} has labels outside 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(data), labels


def train_transform():
    from torchvision import transforms
    return transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def test_transform():
    from torchvision import transforms
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


class IndexedImages(torch.utils.data.Dataset):
    """Images in memory; items are (image, target, index): CRD needs each sample's index."""

    def __init__(self, images, targets, transform):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.transform(Image.fromarray(self.images[index]))
        return image, int(self.targets[index]), index
