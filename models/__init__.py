"""The CIFAR-100 model zoo of the CRD repository (HobbitLong/RepDistiller, models/), mdistiller's
Tiny-ImageNet MobileNetV2 (`MobileNetV2_tiny`), and the ImageNet models (torchvision's
ResNet18/34/50, mdistiller's MobileNetV1), by name.

Every constructor takes `num_classes` (default 100; 1000 for the ImageNet models); every model's
`forward(x, is_feat=False, preact=False)` returns the logits, or `(feats, logits)` with
`is_feat=True`, and the state-dict keys are those of the original so its released teacher
checkpoints load with `strict=True` (torchvision's IMAGENET1K_V1 weights for the ImageNet
ResNets). The ImageNet models carry `input_size = 224`, MobileNetV2_tiny `input_size = 64`.
Any classification model of torchvision or timm is named `torchvision:NAME` / `timm:NAME`
(models/library.py gives it the same interface).
"""
from common.resolve import resolve

from .library import Constructor, split_name

from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import mobile_half
from .mobilenetv2_tiny import MobileNetV2_tiny
from .resnet import resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44, resnet56, resnet110
from .resnet_imagenet import resnet18_imagenet, resnet34_imagenet, resnet50_imagenet
from .resnetv2 import ResNet18, ResNet34, ResNet50
from .shufflenetv1 import ShuffleV1
from .shufflenetv2 import ShuffleV2
from .vgg import vgg8, vgg11, vgg13, vgg16, vgg19
from .wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

model_dict = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "ResNet18": ResNet18,
    "ResNet34": ResNet34,
    "ResNet50": ResNet50,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "MobileNetV2": mobile_half,
    "MobileNetV2_tiny": MobileNetV2_tiny,
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
    "resnet18_imagenet": resnet18_imagenet,
    "resnet34_imagenet": resnet34_imagenet,
    "resnet50_imagenet": resnet50_imagenet,
    "MobileNetV1": MobileNetV1,
}


def _accept(obj):
    return None if callable(obj) else "not callable (a model is a callable taking num_classes)"


def model_entry(name, key=None):
    """(constructor, origin) of a model name: a built-in name, torchvision:NAME or timm:NAME
    (models/library.py), PACKAGE.MODULE:CALLABLE or an installed package's entry point
    (common/resolve.py); origin is None for a built-in or a library's model."""
    library = split_name(name)
    if library:
        return Constructor(*library), None
    return resolve(name, model_dict, "model", _accept, key=key)


def get_model(name, key=None):
    """The constructor of a model name (`model_entry` without the origin)."""
    return model_entry(name, key)[0]


def build_model(name, num_classes, image_size=None, kwargs=None, key=None):
    """The model `name` for `num_classes` classes: a library's built for `image_size` (its ViTs
    take one), any with the extra constructor arguments `kwargs` (a config's model_*_kwargs)."""
    constructor = get_model(name, key)
    if isinstance(constructor, Constructor):
        model = constructor(num_classes, image_size, **(kwargs or {}))
    else:
        model = constructor(num_classes=num_classes, **(kwargs or {}))
    if image_size:
        model.input_size = image_size  # the side its dry passes probe with (the run's images)
    return model
