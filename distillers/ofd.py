"""OFD: Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019), as mdistiller's.

Pre-activation maps (`forward(preact=True)`: each stage's output before its last ReLU): the last n
of feats[1:-1] of both models, n = the teacher's `get_bn_before_relu()` count (all its maps for
the CIFAR zoo; stages 2-4 of the ImageNet ResNets, as mdistiller's). Student map
i -> connector C_i (1x1 conv without bias, then BN) to the teacher's channels; the teacher's map
adaptive-average-pooled to the student's size: t. Margin m per teacher channel, from the BN
before that map's ReLU (`get_bn_before_relu`, weight w, bias b, s = |w|): the expected negative
response E[y | y < 0] of y ~ N(b, s^2), m = b - s phi(b/s) / Phi(-b/s), or -3 s where
Phi(-b/s) <= 0.001; computed once at build time, kept as buffers (not trained, saved).
Partial L2, with x = C_i(f_s) and t' = max(t, m):
    L_i = 1/B sum over (b, c, h, w) of [x > t' or t > 0] (x - t')^2
L_method = sum_i L_i / 2^(n - 1 - i) (the deepest pair weight 1, each shallower one half).
mdistiller: FEAT_WEIGHT 0.001 (beta), CE weight 1 (gamma), connector kernel 1.

As in mdistiller (and the OFD authors' code), the teacher follows the distiller's mode: while
training it runs in train mode, so its BNs use the batch's statistics and their running
statistics move (its weights never do: no gradient, no optimizer); `eval()` puts it back.

Refused, where the original cannot run (no figure to equal): a MobileNetV2 on either side (no
pre-activation features), a ShuffleV1 student (the original has no stage channels for it), a
ResNet18/34/50 teacher (the original's stage channels skip its first stage), a teacher without
`get_bn_before_relu` or whose BNs do not match its last maps one for one, a teacher with more maps
than the student (the original pairs its first BNs with its last maps); and a BN weight of 0 in
the teacher (its margin is undefined).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError

from .base import Distiller

# what mdistiller's OFD cannot run, by model class (no original to equal): refused, with why
CANNOT_BE_STUDENT = {
    "models.mobilenetv2.MobileNetV2": "MobileNetV2 has no pre-activation features",
    "models.shufflenetv1.ShuffleNet": "mdistiller's ShuffleV1 has no stage channels to build connectors from",
    "models.mobilenetv2_tiny.MobileNetV2Tiny": "MobileNetV2_tiny has no pre-activation features",
}
CANNOT_BE_TEACHER = {
    "models.mobilenetv2.MobileNetV2": "MobileNetV2 has no pre-activation features",
    "models.mobilenetv2_tiny.MobileNetV2Tiny": "MobileNetV2_tiny has no pre-activation features",
    "models.resnetv2.ResNet": "mdistiller's ResNet18/34/50 stage channels skip the first stage, "
                              "so its connectors and margins miss the maps",
}


def architecture(model):
    return f"{type(model).__module__}.{type(model).__qualname__}"


@torch.no_grad()
def bn_margin(bn):
    """Per channel, E[y | y < 0] for y ~ N(bias, weight^2) (-3 |weight| where P(y < 0) <= 0.001),
    computed in float64, kept in the BN's dtype; shape (1, C, 1, 1)."""
    std, mean = bn.weight.double().abs(), bn.bias.double()
    if (std == 0).any():
        raise UserError(f"OFD: the teacher's BN before ReLU ({bn.num_features} channels) has a "
                        f"weight of 0, where its margin is undefined: use a trained teacher")
    below = torch.special.ndtr(-mean / std)
    density = torch.exp(-(mean / std) ** 2 / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(below > 0.001, mean - std * density / below, -3 * std)
    return margin.to(bn.weight.dtype).view(1, -1, 1, 1)


def partial_l2(x, t, margin):
    """OFD's partial L2 (see the module's docstring), summed over (C, H, W), mean over the batch."""
    t_clipped = torch.maximum(t, margin)
    active = (x > t_clipped) | (t > 0)
    return ((x - t_clipped).pow(2) * active).sum() / x.shape[0]


def connector(s_channels, t_channels):
    """1x1 conv (no bias; N(0, 2 / t_channels) as the original) then BN: student -> teacher."""
    conv = nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(t_channels))


class OFD(Distiller):
    preact = True
    teacher_train_mode = True  # the original's: the teacher's BNs on batch statistics
    check_settings = {"beta": 0.001}  # its paper's weight: the partial L2 is large

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        for model, role, refused in ((student, "student", CANNOT_BE_STUDENT),
                                     (teacher, "teacher", CANNOT_BE_TEACHER)):
            if architecture(model) in refused:
                raise UserError(f"OFD cannot use this {role}: {refused[architecture(model)]}; "
                                f"choose another {role}")
        if not hasattr(teacher, "get_bn_before_relu"):
            raise UserError("OFD needs a teacher with get_bn_before_relu (its margins come from "
                            "those BNs): choose another teacher")
        maps_s, maps_t = self.probe_feats(student)[1:-1], self.probe_feats(teacher)[1:-1]
        bns = teacher.get_bn_before_relu()
        maps_t = maps_t[len(maps_t) - len(bns):]  # the maps after those BNs: the teacher's last ones
        if [bn.num_features for bn in bns] != [f.shape[1] for f in maps_t]:
            raise UserError(f"OFD: the teacher's BNs before ReLU ({len(bns)}) do not match its last "
                            f"{len(maps_t)} maps one for one: choose another teacher")
        if len(maps_t) > len(maps_s):
            raise UserError(f"OFD: the teacher has more maps ({len(maps_t)}) than the student "
                            f"({len(maps_s)}), which the original cannot pair: choose another pair")
        maps_s = maps_s[len(maps_s) - len(maps_t):]
        self.connectors = nn.ModuleList(connector(f_s.shape[1], f_t.shape[1])
                                        for f_s, f_t in zip(maps_s, maps_t))
        for i, bn in enumerate(bns):
            self.register_buffer(f"margin{i}", bn_margin(bn))

    @property
    def margins(self):
        return [getattr(self, f"margin{i}") for i in range(len(self.connectors))]

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        n = len(self.connectors)
        loss = 0.0
        pairs = zip(feats_s[1:-1][-n:], feats_t[1:-1][-n:], self.connectors, self.margins)
        for i, (f_s, f_t, conv_bn, margin) in enumerate(pairs):
            x = conv_bn(f_s)
            t = F.adaptive_avg_pool2d(f_t, x.shape[-2:])
            loss = loss + partial_l2(x, t, margin) / 2 ** (n - 1 - i)
        return {"ofd": loss}
