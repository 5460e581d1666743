"""ShuffleNet V1 for CIFAR (ShuffleV1: groups 3, stage widths 240/480/960).

Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices" (CVPR 2018), as defined in the CRD repository's model zoo (HobbitLong/RepDistiller,
models/ShuffleNetv1.py, after kuangliu/pytorch-cifar): a 1x1 stem, grouped 1x1 convolutions with
a channel shuffle, and stride-2 units that concatenate an average-pooled shortcut.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .util import ShuffleBlock, run_stages, zoo_output


class Bottleneck(nn.Module):
    def __init__(self, in_planes, out_planes, stride, groups, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.stride = stride
        mid_planes = out_planes // 4
        g = 1 if in_planes == 24 else groups  # the first unit sees the 24-channel stem ungrouped
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ShuffleBlock(groups=g)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1,
                               groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.shuffle1(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        preact = torch.cat([out, res], 1) if self.stride == 2 else out + res
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ShuffleNet(nn.Module):
    def __init__(self, out_planes, num_blocks, groups, num_classes=100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes, num_blocks, groups):
        layers = []
        for i in range(num_blocks):
            # The stride-2 unit concatenates its input, so its branch produces the difference.
            branch_planes = out_planes - self.in_planes if i == 0 else out_planes
            layers.append(Bottleneck(self.in_planes, branch_planes, stride=2 if i == 0 else 1,
                                     groups=groups, is_last=i == num_blocks - 1))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        f0 = F.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(f0, (self.layer1, self.layer2, self.layer3))
        pooled = F.avg_pool2d(x, 4).flatten(1)
        return zoo_output(self.linear(pooled), [f0, *feats, pooled], [f0, *preacts, pooled], is_feat, preact,
                          pooled_map, x)


def ShuffleV1(**kwargs):
    return ShuffleNet(out_planes=[240, 480, 960], num_blocks=[4, 8, 4], groups=3, **kwargs)
