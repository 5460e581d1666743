"""MobileNetV1 for ImageNet, the student of the ResNet50 -> MobileNetV1 pair of CRD and mdistiller.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications" (2017), width 1.0, as mdistiller defines it (mdistiller/models/imagenet/
mobilenetv1.py): `model` is a sequence of a 3x3 stride-2 conv-BN-ReLU (32 channels), thirteen
depthwise-separable blocks (3x3 depthwise conv-BN-ReLU, 1x1 conv-BN-ReLU) and the average pool;
then `fc`. The state-dict keys are its checkpoints' (model.0.0.weight ... fc.bias). The pool is
adaptive (mdistiller: a 7x7 average pool, the same at 224 x 224), so smaller inputs work too.
PyTorch's default initialisation, as mdistiller.

Features: mdistiller's four maps (the outputs of blocks 3, 5, 11 and 13: 128, 256, 512 and 1024
channels, 56, 28, 14 and 7 pixels wide at 224), with the stem (32 channels, 112 wide) in front
and the pooled vector last, so that the list lines up with the ImageNet ResNets' stem, four
stages and vector. `preact=True`: each of them before its last ReLU.
"""
import torch.nn as nn
import torch.nn.functional as F

from .util import zoo_output


def conv_bn(inp, oup, stride):
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


def conv_dw(inp, oup, stride):
    return nn.Sequential(
        nn.Conv2d(inp, inp, kernel_size=3, stride=stride, padding=1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, kernel_size=1, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    input_size = 224  # the image size the distillers probe features at
    # (output channels, stride) of the depthwise-separable blocks 1..13
    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
    FEATURE_BLOCKS = (0, 3, 5, 11, 13)  # the stem, then the last block of each resolution

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, channels = [conv_bn(3, 32, 2)], 32
        for out, stride in self.BLOCKS:
            layers.append(conv_dw(channels, out, stride))
            channels = out
        self.model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(1024, num_classes)

    def get_feat_modules(self):
        return nn.ModuleList([self.model])

    def get_bn_before_relu(self):
        return [self.model[i][-2] for i in self.FEATURE_BLOCKS[1:]]

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        feats, preacts, start = [], [], 0
        for end in self.FEATURE_BLOCKS:
            for i in range(start, end):
                x = self.model[i](x)
            pre = self.model[end][:-1](x)
            x = F.relu(pre)
            feats.append(x)
            preacts.append(pre)
            start = end + 1
        pooled = self.model[-1](x).flatten(1)
        return zoo_output(self.fc(pooled), [*feats, pooled], [*preacts, pooled], is_feat, preact, pooled_map, x)
