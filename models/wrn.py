"""Wide Residual Networks WRN-d-k for CIFAR (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), as defined in the CRD repository's
model zoo (HobbitLong/RepDistiller, models/wrn.py, itself after xternalz/WideResNet-pytorch):
pre-activation blocks (BN-ReLU-conv), a 1x1 conv shortcut where the width changes, and "preact"
features obtained by applying the next BN to each stage's output.
"""
import torch.nn as nn

from .util import init_weights


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # The identity shortcut carries the raw input; the projection takes the activated one.
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(nb_layers)
        ])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen_factor=1, num_classes=100):
        super().__init__()
        assert (depth - 4) % 6 == 0, "depth should be 6n+4"
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels[3], num_classes)

        init_weights(self, zero_linear_bias=True)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self):
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        out = self.conv1(x)
        f0 = out
        out = self.block1(out)
        f1 = out
        out = self.block2(out)
        f2 = out
        out = self.block3(out)
        f3 = out
        the_map = self.relu(self.bn1(out))
        out = self.avgpool(the_map).flatten(1)
        f4 = out
        out = self.fc(out)
        if not is_feat and not pooled_map:
            return out
        if preact:
            f1 = self.block2.layer[0].bn1(f1)
            f2 = self.block3.layer[0].bn1(f2)
            f3 = self.bn1(f3)
        return ([f0, f1, f2, f3, f4], out, the_map) if pooled_map else ([f0, f1, f2, f3, f4], out)


def wrn_16_1(**kwargs):
    return WideResNet(depth=16, widen_factor=1, **kwargs)


def wrn_16_2(**kwargs):
    return WideResNet(depth=16, widen_factor=2, **kwargs)


def wrn_40_1(**kwargs):
    return WideResNet(depth=40, widen_factor=1, **kwargs)


def wrn_40_2(**kwargs):
    return WideResNet(depth=40, widen_factor=2, **kwargs)
