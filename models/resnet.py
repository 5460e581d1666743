"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2 CIFAR
networks, as defined in the CRD repository's model zoo (HobbitLong/RepDistiller,
models/resnet.py): three stages of basic blocks, a 1x1 conv + BN projection shortcut wherever the
shape changes, and the pre-ReLU output of each stage's last block as its "preact" feature.
"""
import torch.nn as nn
import torch.nn.functional as F

from .util import init_weights, residual_stage, run_stages, zoo_output


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        preact = out + residual
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ResNet(nn.Module):
    def __init__(self, depth, num_filters, num_classes=100):
        super().__init__()
        assert (depth - 2) % 6 == 0, "depth should be 6n+2"
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)

        init_weights(self)

    def _make_layer(self, planes, blocks, stride=1):
        stage, self.inplanes = residual_stage(BasicBlock, self.inplanes, planes, blocks, stride)
        return stage

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self):
        return [self.layer1[-1].bn2, self.layer2[-1].bn2, self.layer3[-1].bn2]

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        f0 = self.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(f0, (self.layer1, self.layer2, self.layer3))
        pooled = self.avgpool(x).flatten(1)
        return zoo_output(self.fc(pooled), [f0, *feats, pooled], [f0, *preacts, pooled], is_feat, preact,
                          pooled_map, x)


def resnet8(**kwargs):
    return ResNet(8, [16, 16, 32, 64], **kwargs)


def resnet14(**kwargs):
    return ResNet(14, [16, 16, 32, 64], **kwargs)


def resnet20(**kwargs):
    return ResNet(20, [16, 16, 32, 64], **kwargs)


def resnet32(**kwargs):
    return ResNet(32, [16, 16, 32, 64], **kwargs)


def resnet44(**kwargs):
    return ResNet(44, [16, 16, 32, 64], **kwargs)


def resnet56(**kwargs):
    return ResNet(56, [16, 16, 32, 64], **kwargs)


def resnet110(**kwargs):
    return ResNet(110, [16, 16, 32, 64], **kwargs)


def resnet8x4(**kwargs):
    return ResNet(8, [32, 64, 128, 256], **kwargs)


def resnet32x4(**kwargs):
    return ResNet(32, [32, 64, 128, 256], **kwargs)
