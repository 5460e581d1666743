"""CIFAR-100 (100 classes, 32x32): torchvision's archive, `<root>/cifar-100-python/{train,test}`.

The labels are the `fine_labels`; the transforms are the CRD repository's (dataset/cifar.py).
"""
from functools import partial

from . import cifar

SIZE = cifar.SIZE
NUM_CLASSES = 100
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
BASE_FOLDER = "cifar-100-python"
FILES = cifar.CifarFiles(
    title="CIFAR-100", folder=BASE_FOLDER, splits={"train": ["train"], "test": ["test"]},
    label_key="fine_labels", num_classes=NUM_CLASSES,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive="cifar-100-python.tar.gz", archive_md5="eb9058c3a382ffc7106e4002c42a8d85")

split_path = FILES.path
is_present = FILES.is_present
ensure_cifar100 = FILES.ensure
prepare = FILES.prepare
locate = FILES.locate
read = FILES.read
read_split = FILES.read_split
train_transform = partial(cifar.train_transform, MEAN, STD)
test_transform = partial(cifar.test_transform, MEAN, STD)
