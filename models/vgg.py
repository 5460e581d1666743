"""VGG with batch normalisation for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015), as defined in the CRD repository's model zoo (HobbitLong/RepDistiller,
models/vgg.py, the `*_bn` variants): five conv blocks, each ending in a BN whose output is the
"preact" feature, max-pooling between the first four (the fourth only for 64x64 inputs), global
average pooling and a single linear classifier.
"""
import torch.nn as nn
import torch.nn.functional as F

from .util import init_weights, zoo_output

CFG = {
    "S": [[64], [128], [256], [512], [512]],
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_block(widths, in_channels):
    """conv-BN-ReLU per width, without the final ReLU (the forward applies it)."""
    layers = []
    for v in widths:
        layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        in_channels = v
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, cfg, num_classes=100):
        super().__init__()
        in_channels = [3] + [widths[-1] for widths in cfg[:-1]]
        self.block0 = _make_block(cfg[0], in_channels[0])
        self.block1 = _make_block(cfg[1], in_channels[1])
        self.block2 = _make_block(cfg[2], in_channels[2])
        self.block3 = _make_block(cfg[3], in_channels[3])
        self.block4 = _make_block(cfg[4], in_channels[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)

        init_weights(self, linear_std=0.01, zero_linear_bias=True)

    def get_feat_modules(self):
        return nn.ModuleList([self.block0, self.pool0, self.block1, self.pool1, self.block2,
                              self.pool2, self.block3, self.pool3, self.block4])

    def get_bn_before_relu(self):
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        h = x.shape[2]
        x = F.relu(self.block0(x))
        f0 = x
        x = self.block1(self.pool0(x))
        f1_pre = x
        x = F.relu(x)
        f1 = x
        x = self.block2(self.pool1(x))
        f2_pre = x
        x = F.relu(x)
        f2 = x
        x = self.block3(self.pool2(x))
        f3_pre = x
        x = F.relu(x)
        f3 = x
        if h == 64:
            x = self.pool3(x)
        x = self.block4(x)
        f4_pre = x
        x = F.relu(x)
        f4 = x
        x = self.pool4(f4).flatten(1)
        f5 = x
        return zoo_output(self.classifier(x), [f0, f1, f2, f3, f4, f5], [f0, f1_pre, f2_pre, f3_pre, f4_pre, f5],
                          is_feat, preact, pooled_map, f4)


def vgg8(**kwargs):
    return VGG(CFG["S"], **kwargs)


def vgg11(**kwargs):
    return VGG(CFG["A"], **kwargs)


def vgg13(**kwargs):
    return VGG(CFG["B"], **kwargs)


def vgg16(**kwargs):
    return VGG(CFG["D"], **kwargs)


def vgg19(**kwargs):
    return VGG(CFG["E"], **kwargs)
