"""CIFAR-10 (10 classes, 32x32): torchvision's archive and md5, `<root>/cifar-10-batches-py/`
with `data_batch_1` .. `data_batch_5` (training) and `test_batch`, labels under `labels`.

Transforms: CIFAR-100's (RandomCrop(32, padding=4) + flip), normalised with CIFAR-10's
per-channel mean and standard deviation of the training pixels.
"""
from functools import partial

from . import cifar

SIZE = cifar.SIZE
NUM_CLASSES = 10
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
FILES = cifar.CifarFiles(
    title="CIFAR-10", folder="cifar-10-batches-py",
    splits={"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    label_key="labels", num_classes=NUM_CLASSES,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive="cifar-10-python.tar.gz", archive_md5="c58f30108f718f92721af3b95e74349a")

prepare = FILES.prepare
locate = FILES.locate
read = FILES.read
read_split = FILES.read_split
train_transform = partial(cifar.train_transform, MEAN, STD)
test_transform = partial(cifar.test_transform, MEAN, STD)
