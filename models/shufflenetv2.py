"""ShuffleNet V2 1x for CIFAR (ShuffleV2: stage widths 116/232/464, 1024-d head).

Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design"
(ECCV 2018), as defined in the CRD repository's model zoo (HobbitLong/RepDistiller,
models/ShuffleNetv2.py, after kuangliu/pytorch-cifar): a 1x1 stem, a two-branch down-sampling
unit opening each stage, channel-split basic units, and a channel shuffle after every unit. The
"preact" feature of a stage is its last unit's concatenation before the ReLU and the shuffle.
The average pool covers the whole final map (the original: a 4x4 pool, the same operation at
32x32), so that the model also takes Tiny-ImageNet's 64x64 images (mdistiller's ResNet18 ->
ShuffleV2 pair, which its own code cannot run at 64x64).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .util import ShuffleBlock, run_stages, zoo_output


class BasicBlock(nn.Module):
    def __init__(self, in_channels, split_ratio=0.5, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.split = int(in_channels * split_ratio)
        c = self.split
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock()

    def forward(self, x):
        x1, x2 = x[:, :self.split], x[:, self.split:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        branch = self.bn3(self.conv3(out))
        out = self.shuffle(torch.cat([x1, F.relu(branch)], 1))
        return (out, torch.cat([x1, branch], 1)) if self.is_last else out


class DownBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        # left branch: depthwise stride-2 conv, then 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1,
                               groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1, depthwise stride-2 conv, 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock()

    def forward(self, x):
        out1 = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(out2)))))
        return self.shuffle(torch.cat([out1, out2], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3), num_classes=100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels, num_blocks):
        layers = [DownBlock(self.in_channels, out_channels)]
        layers += [BasicBlock(out_channels, is_last=i == num_blocks - 1) for i in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        f0 = F.relu(self.bn1(self.conv1(x)))
        x, feats, preacts = run_stages(f0, (self.layer1, self.layer2, self.layer3))
        x = F.relu(self.bn2(self.conv2(x)))
        pooled = F.avg_pool2d(x, x.shape[2:]).flatten(1)  # global; the original's 4x4 pool at 32x32
        return zoo_output(self.linear(pooled), [f0, *feats, pooled], [f0, *preacts, pooled], is_feat, preact,
                          pooled_map, x)


def ShuffleV2(**kwargs):
    return ShuffleNetV2(**kwargs)
