"""Any image data set in torchvision's ImageFolder layout (`dataset imagefolder`):

    <data_dir>/train/<class>/*.jpg
    <data_dir>/val/<class>/*.jpg        (the test images, in the same class folders)

e.g. CUB-200, Stanford Cars, a subset of ImageNet. The classes are the sub-folders of train/, in
sorted order (torchvision's ImageFolder numbering); val/ must hold the same ones. Image files are
those of torchvision's IMG_EXTENSIONS. Transforms are ImageNet's at `imagefolder_size` (default
224): RandomResizedCrop + horizontal flip for training; Resize(size * 256 / 224) + CenterCrop
for testing; normalised with `imagefolder_mean` / `imagefolder_std` (default ImageNet's). The
fast path decodes the JPEG files on the GPU (dataset/gpu_jpeg.py), as ImageNet's does.

Before any run folder exists, one line each refuses: a missing train/ or val/, a class of
train/ missing from val/ (or one only in val/), a class folder without images, and an image
file that PIL cannot open.
"""
import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor

from common.errors import UserError

from .images import ImageFiles

FOLDERS = {"train": "train", "test": "val"}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224
NUM_CLASSES = None   # counted from the tree (`configure`)


def split_folder(root, split):
    return os.path.join(root, FOLDERS[split])


def class_names(root):
    """The sorted class folders of train/, checked against val/."""
    found = {}
    for split, folder in FOLDERS.items():
        path = split_folder(root, split)
        if not os.path.isdir(path):
            raise UserError(f"imagefolder: {os.path.abspath(path)} not found; lay the data set out as "
                            f"train/<class>/<image> and val/<class>/<image> in {os.path.abspath(root)} (or set data_dir)")
        found[split] = sorted(e.name for e in os.scandir(path) if e.is_dir())
    train, test = found["train"], found["test"]
    if not train:
        raise UserError(f"imagefolder: {split_folder(root, 'train')} holds no class folders")
    if train != test:
        missing = sorted(set(train) - set(test))
        extra = sorted(set(test) - set(train))
        what = (f"class '{missing[0]}' of train/ is missing from val/" if missing
                else f"class '{extra[0]}' of val/ is not in train/")
        raise UserError(f"imagefolder: {what} ({len(missing)} missing, {len(extra)} extra): both need the same "
                        f"class folders")
    return train


def scan(root, split, names):
    """(paths, targets) of a split, as ImageFolder lists them; an empty class is refused."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    try:
        samples = make_dataset(split_folder(root, split), {name: c for c, name in enumerate(names)},
                               extensions=IMG_EXTENSIONS, allow_empty=False)
    except FileNotFoundError as e:
        raise UserError(f"imagefolder: an empty class: {str(e).splitlines()[0]}") from None
    return [path for path, _ in samples], [target for _, target in samples]


def check_readable(paths):
    """Open the header of every image (PIL, by a thread per core); the first that fails is one line."""
    from PIL import Image

    def bad(path):
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as e:  # noqa: BLE001 -- any decoder error is an unreadable image
            return f"{path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})"
        return None
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for problem in pool.map(bad, paths):
            if problem:
                raise UserError(f"imagefolder: cannot read image {problem}: remove or replace it")


def prepare(cfg, root):
    names = class_names(root)
    for split in FOLDERS:
        check_readable(scan(root, split, names)[0])


def read(root, split):
    return ImageFiles(*scan(root, split, class_names(root)))


def train_transform(size=SIZE, mean=MEAN, std=STD):
    from torchvision import transforms
    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


def test_transform(size=SIZE, mean=MEAN, std=STD):
    from torchvision import transforms
    return transforms.Compose([transforms.Resize(resize_of(size)), transforms.CenterCrop(size),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


def resize_of(size):
    """The shorter side before the test's centre crop: ImageNet's 256 for 224."""
    return round(size * 256 / 224)


def configure(data_spec, cfg, root):
    """The spec of this tree: named after its folder (imagefolder_CUB_200_2011: the derived run
    folders of two trees differ), its class count, the config's size and normalisation."""
    size, mean, std = cfg.imagefolder_size, tuple(cfg.imagefolder_mean), tuple(cfg.imagefolder_std)
    if size < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UserError(f"imagefolder: imagefolder_size must be positive and imagefolder_mean / imagefolder_std "
                        f"three values each (std above 0); got {size}, {list(mean)}, {list(std)}")
    tree = os.path.basename(os.path.normpath(os.path.abspath(root)))
    return dataclasses.replace(
        data_spec, name=f"{data_spec.name}_{tree}", num_classes=len(class_names(root)), image_size=size,
        mean=mean, std=std,
        train_transform=functools.partial(train_transform, size, mean, std),
        test_transform=functools.partial(test_transform, size, mean, std))
