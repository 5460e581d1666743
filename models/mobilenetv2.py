"""MobileNetV2 for CIFAR at half width (CRD's `mobile_half`, expansion 6, width 0.5).

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018), as defined
in the CRD repository's model zoo (HobbitLong/RepDistiller, models/mobilenetv2.py): a stride-2
stem, seven stages of inverted residual blocks, a 1x1 conv to 1280 channels, average pooling and
a linear classifier. The architecture has no pre-ReLU features: `preact` is accepted and ignored.
"""
import torch.nn as nn

from .util import conv_bn_act, init_weights


def inverted_residual(inp, oup, stride, expand_ratio, bias=False, act=nn.ReLU):
    """The layers of an inverted residual block: 1x1 expansion, 3x3 depthwise conv (`stride`),
    1x1 linear projection, each followed by BatchNorm (indices 0..7 of one Sequential)."""
    hidden = inp * expand_ratio
    return nn.Sequential(
        *conv_bn_act(inp, hidden, 1, bias=bias, act=act),
        *conv_bn_act(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=bias, act=act),
        *conv_bn_act(hidden, oup, 1, bias=bias, act=None),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        assert stride in (1, 2)
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = inverted_residual(inp, oup, stride, expand_ratio)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # (channels, repeats, stride of the first block) per stage; stage 0 has expansion 1, the rest T
    SETTING = [(16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]

    def __init__(self, T, width_mult, num_classes=100, input_size=32):
        super().__init__()
        assert input_size % 32 == 0
        input_channel = int(32 * width_mult)
        self.conv1 = nn.Sequential(*conv_bn_act(3, input_channel, 3, stride=2, padding=1))
        self.blocks = nn.ModuleList()
        for i, (c, n, s) in enumerate(self.SETTING):
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, 1 if i == 0 else T))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(*conv_bn_act(input_channel, self.last_channel, 1))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))

        init_weights(self, linear_std=0.01, zero_linear_bias=True)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self):
        return [self.blocks[i][-1].conv[-1] for i in (1, 2, 4, 6)]

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        out = self.conv1(x)
        f0 = out
        out = self.blocks[1](self.blocks[0](out))
        f1 = out
        out = self.blocks[2](out)
        f2 = out
        out = self.blocks[4](self.blocks[3](out))
        f3 = out
        out = self.blocks[6](self.blocks[5](out))
        f4 = out
        the_map = self.conv2(out)
        out = self.avgpool(the_map).flatten(1)
        f5 = out
        out = self.classifier(out)
        if pooled_map:
            return [f0, f1, f2, f3, f4, f5], out, the_map
        if is_feat:
            return [f0, f1, f2, f3, f4, f5], out
        return out


def mobile_half(**kwargs):
    return MobileNetV2(T=6, width_mult=0.5, **kwargs)
