"""Tiny-ImageNet (200 classes, 64x64), read as distributed: no reorganising script.

    <data_dir>/tiny-imagenet-200/wnids.txt                the classes, one WordNet id a line
    <data_dir>/tiny-imagenet-200/train/<wnid>/images/*.JPEG
    <data_dir>/tiny-imagenet-200/val/images/*.JPEG
    <data_dir>/tiny-imagenet-200/val/val_annotations.txt  file <TAB> wnid <TAB> bounding box

(`data_dir` may also be the `tiny-imagenet-200` folder itself.) Class c is the c-th wnid in
sorted order, as torchvision's ImageFolder (and so mdistiller) numbers the class folders of
`train/`. The test split is `val/` (the official test images have no labels).

Transforms, as the issue asks: RandomCrop(64, padding=8) + horizontal flip for training,
normalised with mdistiller's Tiny-ImageNet mean and std. (mdistiller itself trains with
RandomRotation(20) + flip.) Nothing is downloaded.
"""
import os
import warnings

from common.errors import UserError

from .images import ImageFiles

NUM_CLASSES = 200
SIZE = 64
PAD = 8
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)
FOLDER = "tiny-imagenet-200"
EXTENSIONS = (".jpeg", ".jpg", ".png")


def folder(root):
    """The tiny-imagenet-200 folder: `root` itself when it holds wnids.txt, else root/tiny-imagenet-200."""
    return root if os.path.isfile(os.path.join(root, "wnids.txt")) else os.path.join(root, FOLDER)


def missing(what, root):
    return UserError(f"Tiny-ImageNet: {what} not found; extract tiny-imagenet-200.zip (from "
                     f"http://cs231n.stanford.edu/tiny-imagenet-200.zip) into {os.path.abspath(root)}/ "
                     f"so that {os.path.abspath(os.path.join(root, FOLDER, 'wnids.txt'))} exists")


def prepare(cfg, root):
    home = folder(root)
    for part in ("wnids.txt", "train", os.path.join("val", "images"), os.path.join("val", "val_annotations.txt")):
        if not os.path.exists(os.path.join(home, part)):
            raise missing(os.path.join(home, part), root)


def classes(root):
    path = os.path.join(folder(root), "wnids.txt")
    try:
        with open(path) as f:
            wnids = sorted({line.strip() for line in f if line.strip()})
    except OSError:
        raise missing(path, root) from None
    if not wnids or len(wnids) > NUM_CLASSES:
        raise UserError(f"{path} lists {len(wnids)} classes; Tiny-ImageNet has {NUM_CLASSES}")
    if len(wnids) < NUM_CLASSES:
        warnings.warn(f"{path} lists {len(wnids)} classes, not {NUM_CLASSES}: the models keep "
                      f"{NUM_CLASSES} outputs", stacklevel=2)
    return wnids


def images_in(path):
    try:
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(EXTENSIONS))
    except OSError:
        names = []
    return [os.path.join(path, n) for n in names]


def read(root, split):
    """ImageFiles of split 'train' (train/<wnid>/images/) or 'test' (val/, labelled by val_annotations.txt)."""
    home, wnids = folder(root), classes(root)
    index = {w: c for c, w in enumerate(wnids)}
    paths, targets = [], []
    if split == "train":
        for wnid in wnids:
            found = images_in(os.path.join(home, "train", wnid, "images"))
            if not found:
                raise UserError(f"Tiny-ImageNet class {wnid} has no images in "
                                f"{os.path.join(home, 'train', wnid, 'images')}")
            paths += found
            targets += [index[wnid]] * len(found)
    else:
        annotations = os.path.join(home, "val", "val_annotations.txt")
        try:
            with open(annotations) as f:
                rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        except OSError:
            raise missing(annotations, root) from None
        for number, row in enumerate(rows, 1):
            if len(row) < 2 or row[1] not in index:
                raise UserError(f"{annotations} line {number}: expected 'file<TAB>wnid<TAB>box' with a "
                                f"wnid of wnids.txt, got {row!r:.80}")
            paths.append(os.path.join(home, "val", "images", row[0]))
            targets.append(index[row[1]])
        if not paths:
            raise UserError(f"{annotations} lists no images")
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise UserError(f"{len(absent)} image(s) of {annotations} are missing, e.g. {absent[0]}")
    return ImageFiles(paths, targets)


def train_transform():
    from torchvision import transforms
    return transforms.Compose([transforms.RandomCrop(SIZE, padding=PAD), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def test_transform():
    from torchvision import transforms
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
