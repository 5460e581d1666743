"""The CIFAR-100 model zoo of the CRD repository (HobbitLong/RepDistiller, models/), by name.

Every constructor takes `num_classes` (default 100); every model's
`forward(x, is_feat=False, preact=False)` returns the logits, or `(feats, logits)` with
`is_feat=True`, and the state-dict keys are those of the original so its released teacher
checkpoints load with `strict=True`.
"""
from .mobilenetv2 import mobile_half
from .resnet import resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44, resnet56, resnet110
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
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
}
