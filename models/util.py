"""What the models of the zoo share: initialisation, the channel shuffle, running the stages,
the output."""
import torch.nn as nn


def init_weights(model, linear_std=None, zero_linear_bias=False):
    """The CRD zoo's initialisation: convs Kaiming-normal (fan_out, ReLU) with any bias zero;
    BatchNorm weight 1, bias 0; linear weights N(0, linear_std) when given (else PyTorch's
    default) and their bias zero when `zero_linear_bias`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0, linear_std)
            if zero_linear_bias:
                nn.init.zeros_(m.bias)


def conv_bn_act(inp, oup, kernel_size, stride=1, padding=0, groups=1, bias=False, act=nn.ReLU):
    """[conv, BatchNorm, act] as a list of layers (no activation when `act` is None)."""
    layers = [nn.Conv2d(inp, oup, kernel_size, stride, padding, groups=groups, bias=bias), nn.BatchNorm2d(oup)]
    return layers + [act(inplace=True)] if act else layers


def residual_stage(block, inplanes, planes, blocks, stride=1):
    """`blocks` residual blocks of width `planes` (torchvision's `_make_layer`): the first
    strided, with a 1x1 conv + BN `downsample` shortcut where the shape changes; the last one
    also returns its output before the final ReLU. Returns (the stage, its output channels)."""
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_planes))
    layers = [block(inplanes, planes, stride, downsample, is_last=blocks == 1)]
    layers += [block(out_planes, planes, is_last=i == blocks - 1) for i in range(1, blocks)]
    return nn.Sequential(*layers), out_planes


def last_bns(stages):
    """The BN before the final ReLU of each stage's last block (bn3 of a bottleneck, else bn2)."""
    return [stage[-1].bn3 if hasattr(stage[-1], "bn3") else stage[-1].bn2 for stage in stages]


class ShuffleBlock(nn.Module):
    """Zhang et al., "ShuffleNet" (CVPR 2018): [N, g*c, H, W] -> [N, c*g, H, W], the channels
    of the g groups interleaved. No parameters."""

    def __init__(self, groups=2):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.size()
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def run_stages(x, stages):
    """`x` through stages that each return (output, output before its last ReLU):
    (final output, [outputs], [pre-activation outputs])."""
    feats, preacts = [], []
    for stage in stages:
        x, pre = stage(x)
        feats.append(x)
        preacts.append(pre)
    return x, feats, preacts


def zoo_output(logits, feats, preact_feats, is_feat, preact, pooled_map=False, the_map=None):
    """`forward(x, is_feat, preact, pooled_map)` of every model: the logits, or (features,
    logits), or with `pooled_map` (features, logits, the map the classifier pools)."""
    if pooled_map:
        return (preact_feats if preact else feats), logits, the_map
    if not is_feat:
        return logits
    return (preact_feats if preact else feats), logits
