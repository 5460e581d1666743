"""ImageNet ResNet18/34/50 (torchvision's), with the zoo's features.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), as torchvision builds it
(`torchvision.models.resnet18/34/50`, the v1.5 bottleneck with its stride on the 3x3 conv): a
7x7 stride-2 stem, BN, ReLU and a 3x3 stride-2 max-pool, four stages of basic or bottleneck
blocks with 1x1 conv + BN `downsample` shortcuts, adaptive average pooling and `fc`. The
state-dict keys are torchvision's, so its IMAGENET1K_V1 weights load with `strict=True`.

Features as mdistiller's ImageNet ResNets give them (mdistiller/models/imagenet/resnet.py), in
the zoo's list form: [stem (after BN + ReLU, before the max-pool), stage 1..4, pooled vector];
with `preact=True` the stem before its ReLU and each stage's last block before its final ReLU.
At 224 x 224 the maps are 112, 56, 28, 14 and 7 pixels wide.
"""
import torch.nn as nn
import torch.nn.functional as F

from .resnet import BasicBlock
from .util import init_weights, last_bns, residual_stage, run_stages, zoo_output


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        preact = out + residual
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ResNetImageNet(nn.Module):
    input_size = 224  # the image size the distillers probe features at

    def __init__(self, block, num_blocks, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, num_blocks[0])
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        init_weights(self)  # torchvision's initialisation (zero_init_residual off)

    def _make_layer(self, block, planes, blocks, stride=1):
        stage, self.inplanes = residual_stage(block, self.inplanes, planes, blocks, stride)
        return stage

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.maxpool,
                              self.layer1, self.layer2, self.layer3, self.layer4])

    def get_bn_before_relu(self):
        """Those of stages 2-4, as mdistiller's ImageNet ResNets (what OFD distils there)."""
        return last_bns((self.layer2, self.layer3, self.layer4))

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        stem = self.bn1(self.conv1(x))
        f0 = F.relu(stem)
        x, feats, preacts = run_stages(self.maxpool(f0), (self.layer1, self.layer2, self.layer3, self.layer4))
        pooled = self.avgpool(x).flatten(1)
        return zoo_output(self.fc(pooled), [f0, *feats, pooled], [stem, *preacts, pooled], is_feat, preact,
                          pooled_map, x)


def resnet18_imagenet(**kwargs):
    return ResNetImageNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34_imagenet(**kwargs):
    return ResNetImageNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50_imagenet(**kwargs):
    return ResNetImageNet(Bottleneck, [3, 4, 6, 3], **kwargs)
