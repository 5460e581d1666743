"""ReviewKD: Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021),
as mdistiller computes it (distillers/ReviewKD.py).

Levels: the teacher's n features after the stem, taken BEFORE their last ReLU (feats[1:] of
`forward(preact=True)`; the pooled vector last, as a 1x1 map), against the student's last n
features (feats[-n:] of the plain forward, post-activation). Their channels and sizes are read
from a dry forward pass (mdistiller's IN_CHANNELS, OUT_CHANNELS, SHAPES, OUT_SHAPES).

Review: attention-based fusion (ABF) modules, one per level, run from the deepest level up, each
with mid = min(512, channels of the student's pooled vector) channels:
    x_k = BN(conv1x1(s_k))                                      (C_s -> mid)
    k < n (not the deepest): r = nearest-upsample(r_{k+1}) to the size of s_k,
        (a, b) = sigmoid(conv1x1([x_k, r]))  (two maps, with bias),  x_k <- a * x_k + b * r
    r_k = x_k resized (nearest) to the teacher's size t_k;   o_k = BN(conv3x3(r_k))  (mid -> C_t)
Hierarchical context loss of each level, H = the map's side:
    HCL(o, t) = (mse(o, t) + sum_j w_j mse(pool_j(o), pool_j(t))) / (1 + sum_j w_j)
    over the pooled sizes j in (4, 2, 1) smaller than H, with weights 1/2, 1/4, 1/8 in that order.
L_method = min(epoch / warmup_epochs, 1) * sum_k HCL(o_k, t_k)   (epoch from 1; `WarmUp`).
The original's REVIEWKD_WEIGHT is beta, its CE_WEIGHT gamma; no Hinton KD term (alpha 0).

Refused: warmup_epochs below 0; a student with fewer features than the teacher has levels.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError

from .base import WARMUP_EPOCHS, Distiller, WarmUp

MAX_MID_CHANNELS = 512


def as_map(f):
    """A feature as a 4-d map: the pooled vector (B, D) becomes (B, D, 1, 1)."""
    return f if f.dim() == 4 else f[:, :, None, None]


def hierarchical_context_loss(f_s, f_t):
    """HCL of one level (the docstring above): plain MSE plus the MSE of the maps average-pooled
    to 4x4, 2x2 and 1x1 (those smaller than the map), weighted 1/2, 1/4, 1/8, normalised."""
    loss, weight, total = F.mse_loss(f_s, f_t), 1.0, 1.0
    for size in (4, 2, 1):
        if size < f_s.shape[2]:
            weight /= 2
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, size),
                                              F.adaptive_avg_pool2d(f_t, size))
            total += weight
    return loss / total


class AttentionFusion(nn.Module):
    """One ABF: the student's map to `mid` channels, fused with the deeper level's residual by
    two sigmoid attention maps (`fuse`: every level but the deepest), then to the teacher's
    channels. Submodule names are mdistiller's, so its state-dict keys are the original's."""

    def __init__(self, in_channels, mid_channels, out_channels, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual, out_size):
        """(output at `out_size` with the teacher's channels, residual for the next level up)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            attention = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * attention[:, :1] + residual * attention[:, 1:]
        if x.shape[-2:] != out_size:
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


class ReviewKD(Distiller):
    knobs = (WARMUP_EPOCHS,)
    teacher_preact = True
    min_batch = 2  # the batch norm of the 1x1 level needs two samples

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        levels = self.levels(self.probe_feats(student), self.probe_feats(teacher))
        mid = min(MAX_MID_CHANNELS, levels[-1][0][0])
        # deepest level first (index 0): the order of the review and of mdistiller's keys
        self.abfs = nn.ModuleList(AttentionFusion(shape_s[0], mid, shape_t[0], fuse=k > 0)
                                  for k, (shape_s, shape_t) in enumerate(reversed(levels)))
        self.warmup = WarmUp(cfg.warmup_epochs)

    @staticmethod
    def levels(feats_s, feats_t):
        """[(student (C, H, W), teacher (C, H, W))] of each level, shallowest first."""
        teacher = [tuple(as_map(f).shape[1:]) for f in feats_t[1:]]
        if len(feats_s) < len(teacher):
            raise UserError(f"ReviewKD pairs the teacher's {len(teacher)} features after the stem with as many "
                            f"of the student's, but the student has {len(feats_s)}: choose a deeper "
                            f"student or a shallower teacher")
        student = [tuple(as_map(f).shape[1:]) for f in feats_s[-len(teacher):]]
        return list(zip(student, teacher))

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        students = [as_map(f) for f in feats_s[-len(self.abfs):]]
        teachers = [as_map(f) for f in feats_t[1:]]
        outputs, residual = [], None
        for abf, f_s, f_t in zip(self.abfs, reversed(students), reversed(teachers)):
            out, residual = abf(f_s, residual, f_t.shape[-2:])
            outputs.append(out)
        loss = sum(hierarchical_context_loss(o, t) for o, t in zip(reversed(outputs), teachers))
        return {"reviewkd": self.warmup(loss)}
