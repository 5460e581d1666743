"""ImageNet (ILSVRC-2012: 1000 classes) in torchvision's ImageFolder layout:

    <data_dir>/train/<wnid>/*.JPEG
    <data_dir>/val/<wnid>/*.JPEG       (the 50000 validation images sorted into class folders)

Class c is the c-th wnid folder of train/ in sorted order: torchvision's ImageFolder numbering,
the one of torchvision's pretrained weights and of mdistiller; val/ must hold the same classes.
Training: RandomResizedCrop(224) + horizontal flip; test: Resize(256) + CenterCrop(224); both
normalised with ImageNet's mean and std. Nothing is downloaded. The fast path (`fast true`)
decodes the JPEG files on the GPU: dataset/gpu_jpeg.py.
"""
import os
import warnings

from common.errors import UserError

from .images import ImageFiles

NUM_CLASSES = 1000
SIZE = 224
RESIZE = 256
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FOLDERS = {"train": "train", "test": "val"}


def split_folder(root, split):
    return os.path.join(root, FOLDERS[split])


def prepare(cfg, root):
    for split in FOLDERS:
        path = split_folder(root, split)
        if not os.path.isdir(path):
            raise UserError(f"ImageNet: {os.path.abspath(path)} not found; put the ImageFolder layout "
                            f"train/<wnid>/*.JPEG and val/<wnid>/*.JPEG into {os.path.abspath(root)}/ "
                            f"(or set data_dir)")


def class_folders(root, split):
    path = split_folder(root, split)
    prepare(None, root)
    try:
        names = sorted(e.name for e in os.scandir(path) if e.is_dir())
    except OSError as e:
        raise UserError(f"ImageNet: cannot list {path} ({type(e).__name__}: {e})") from None
    if not names:
        raise UserError(f"ImageNet: {path} holds no class folders (expected {FOLDERS[split]}/<wnid>/*.JPEG)")
    return names


def classes(root):
    """The sorted wnids of train/, checked against val/."""
    train, test = class_folders(root, "train"), class_folders(root, "test")
    if train != test:
        only = sorted(set(train) ^ set(test))
        raise UserError(f"ImageNet: train/ has {len(train)} classes and val/ {len(test)}, and they differ "
                        f"(e.g. {only[0] if only else 'in order'}): both need the same wnid folders")
    if len(train) > NUM_CLASSES:
        raise UserError(f"ImageNet: {split_folder(root, 'train')} has {len(train)} class folders; "
                        f"ImageNet has {NUM_CLASSES}")
    if len(train) < NUM_CLASSES:
        warnings.warn(f"ImageNet: {split_folder(root, 'train')} has {len(train)} class folders, not "
                      f"{NUM_CLASSES}: numbered in sorted order, the models keep {NUM_CLASSES} outputs",
                      stacklevel=2)
    return train


def read(root, split):
    """ImageFiles of split 'train' (train/) or 'test' (val/), scanned as ImageFolder does."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    wnids = classes(root)
    try:
        samples = make_dataset(split_folder(root, split), {w: c for c, w in enumerate(wnids)},
                               extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:   # a class folder without images
        raise UserError(f"ImageNet: {e}".replace("\n", " ")) from None
    return ImageFiles([path for path, _ in samples], [target for _, target in samples])


def train_transform():
    from torchvision import transforms
    return transforms.Compose([transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def test_transform():
    from torchvision import transforms
    return transforms.Compose([transforms.Resize(RESIZE), transforms.CenterCrop(SIZE),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
