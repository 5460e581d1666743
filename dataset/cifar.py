"""CIFAR-10 and CIFAR-100 in torchvision's on-disk format: download, reader, transforms.

A data set is a folder `<root>/<folder>/` of pickled dicts, one per file, each with `data`
(N x 3072 uint8, channel-major rows of 32x32 images) and the labels under `label_key`
(`labels` in CIFAR-10, `fine_labels` in CIFAR-100); a split is one or more such files,
concatenated in order. torchvision downloads and checks the archive; reading is ours
(torchvision's readers insist on the official files' md5, which the synthetic set lacks).
"""
import os
import pickle
from dataclasses import dataclass

import numpy as np

from common.errors import UserError
from common.files import no_empty_folders_left

from .images import ImageArray

SIZE = 32


@dataclass
class CifarFiles:
    """Where a CIFAR data set lives and how its files are read."""
    title: str            # for messages: "CIFAR-100"
    folder: str           # the archive's top folder, e.g. cifar-100-python
    splits: dict          # split name -> its files in `folder`, in order
    label_key: str
    num_classes: int
    url: str
    archive: str
    archive_md5: str

    def path(self, root, name):
        return os.path.join(root, self.folder, name)

    def is_present(self, root):
        return all(os.path.isfile(self.path(root, name)) for files in self.splits.values() for name in files)

    def ensure(self, root, download=True):
        """Make sure every file of every split is in `root/<folder>/`, downloading when allowed
        (a failed download leaves no empty folder that it made)."""
        if self.is_present(root):
            return
        where = self.where(root)
        if not download:
            raise UserError(f"{self.title} not found in {root} and download is off: {where}")
        from torchvision.datasets.utils import download_and_extract_archive  # slow import: only here
        try:
            with no_empty_folders_left(root):
                download_and_extract_archive(self.url, root, filename=self.archive, md5=self.archive_md5)
        except Exception as e:  # urllib, socket, tarfile and md5 errors all mean the same to the user
            raise UserError(f"{self.title} download from {self.url} failed ({type(e).__name__}: {e}); "
                            f"{where}") from None
        if not self.is_present(root):
            raise UserError(f"the {self.title} archive did not contain every file of {self.folder}/; {where}")

    def where(self, root):
        """What to do by hand: where to put the archive."""
        first = self.path(root, self.splits["train"][0])
        return (f"put {self.archive} (from {self.url}) into {os.path.abspath(root)}/ "
                f"or extract it there so that {os.path.abspath(first)} exists")

    def prepare(self, cfg, root):
        self.ensure(root, cfg.download)

    def locate(self, cfg, root):
        """(state, line) of the files in `root` (registry.py's `locate`), downloading nothing."""
        if self.is_present(root):
            return "found", f"{self.title} in {root}"
        if cfg.download:
            return "made", f"{self.title} not in {root}: the run downloads {self.archive} from {self.url}"
        return "missing", f"{self.title} not found in {root} and download is off: {self.where(root)}"

    def read(self, root, split):
        return ImageArray(*self.read_split(root, split))

    def read_split(self, root, split):
        """(images uint8 N x 32 x 32 x 3, labels int64 N) of split 'train' or 'test'."""
        parts = [self._read_file(self.path(root, name)) for name in self.splits[split]]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return np.ascontiguousarray(images), labels

    def _read_file(self, path):
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)
            labels = np.asarray(entry[self.label_key], dtype=np.int64)
        except FileNotFoundError:
            raise UserError(f"missing {self.title} file {path}") from None
        except Exception as e:
            raise UserError(f"cannot read {self.title} file {path} ({type(e).__name__}: {e}); "
                            f"delete {os.path.dirname(path)} to download it again") from None
        if len(data) == 0 or len(data) != len(labels):
            raise UserError(f"{self.title} file {path} holds {len(data)} images and {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise UserError(f"{self.title} file {path} has labels outside 0..{self.num_classes - 1}")
        return data, labels


def train_transform(mean, std):
    """RandomCrop(32, padding=4) + horizontal flip + normalisation: the CRD repository's."""
    from torchvision import transforms
    return transforms.Compose([
        transforms.RandomCrop(SIZE, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def test_transform(mean, std):
    from torchvision import transforms
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
