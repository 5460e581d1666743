"""MobileNetV2 for Tiny-ImageNet, the student of mdistiller's ResNet18 -> MobileNetV2 pair.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018), full
width, as mdistiller defines it for Tiny-ImageNet (mdistiller/models/cifar/mv2_tinyimagenet.py,
`mobilenetv2_tinyimagenet`): a 1x1 stem conv with padding 1 (32 channels; a 64x64 image becomes
66x66), seven stages of inverted residual blocks with ReLU6 and biased convs (`stage1` and
`stage7` are single blocks, the others Sequentials), `conv1` = 1x1 conv-BN-ReLU6 to 1280
channels, global average pooling and `conv2`, a 1x1 conv classifier. PyTorch's default
initialisation, as mdistiller. The state-dict keys are mdistiller's (`pre.0.weight` ...
`conv2.bias`), so its checkpoints load strictly.

Features, as mdistiller returns them: the stem, the outputs of stages 2, 3 and 4 (linear
bottlenecks: no activation), the output of `conv1`, then the pooled 1280-d vector (flattened;
mdistiller's `pooled_feat` is N x 1280 x 1 x 1). At 64x64 the maps are 66, 33, 17, 9 and 9
pixels wide. The architecture has no pre-activation features: `preact` is accepted and ignored.
"""
import torch.nn as nn
import torch.nn.functional as F

from .mobilenetv2 import inverted_residual
from .util import conv_bn_act, zoo_output


class LinearBottleneck(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        self.residual = inverted_residual(inp, oup, stride, expand_ratio, bias=True, act=nn.ReLU6)
        self.skip = stride == 1 and inp == oup

    def forward(self, x):
        return x + self.residual(x) if self.skip else self.residual(x)


class MobileNetV2Tiny(nn.Module):
    input_size = 64  # the image size the distillers probe features at
    # (output channels, blocks, stride of the first block, expansion) of stage1 .. stage7
    STAGES = [(16, 1, 1, 1), (24, 2, 2, 6), (32, 3, 2, 6), (64, 4, 2, 6),
              (96, 3, 1, 6), (160, 3, 1, 6), (320, 1, 1, 6)]
    FEATURE_STAGES = (2, 3, 4)  # the stages whose outputs are features 1..3

    def __init__(self, num_classes=100):
        super().__init__()
        self.pre = nn.Sequential(*conv_bn_act(3, 32, 1, padding=1, bias=True, act=nn.ReLU6))
        channels = 32
        for i, (out, blocks, stride, expansion) in enumerate(self.STAGES, 1):
            stage = [LinearBottleneck(channels if b == 0 else out, out, stride if b == 0 else 1, expansion)
                     for b in range(blocks)]
            self.add_module(f"stage{i}", stage[0] if blocks == 1 else nn.Sequential(*stage))
            channels = out
        self.conv1 = nn.Sequential(*conv_bn_act(channels, 1280, 1, bias=True, act=nn.ReLU6))
        self.conv2 = nn.Conv2d(1280, num_classes, 1)

    def stages(self):
        return [getattr(self, f"stage{i}") for i in range(1, len(self.STAGES) + 1)]

    def get_feat_modules(self):
        return nn.ModuleList([self.pre, *self.stages(), self.conv1])

    def get_bn_before_relu(self):
        """The last BatchNorm of features 1..4 (each stage's last block; conv1's)."""
        stages = self.stages()
        ends = [stages[i - 1][-1].residual[-1] for i in self.FEATURE_STAGES]
        return [*ends, self.conv1[1]]

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        x = self.pre(x)
        feats = [x]
        for i, stage in enumerate(self.stages(), 1):
            x = stage(x)
            if i in self.FEATURE_STAGES:
                feats.append(x)
        x = self.conv1(x)
        pooled = F.adaptive_avg_pool2d(x, 1)
        feats += [x, pooled.flatten(1)]
        return zoo_output(self.conv2(pooled).flatten(1), feats, feats, is_feat, preact, pooled_map, x)


def MobileNetV2_tiny(**kwargs):
    return MobileNetV2Tiny(**kwargs)
