"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

L = mean((R(f_s) - f_t)^2) with f = feats[hint_layer] (2 in the paper's files) and R a regressor
trained with the student: a conv chosen by the spatial sizes (as CRD's ConvReg), then BN, ReLU.

Refused: a hint_layer that is not a feature map of both models, and student/teacher maps
whose sizes are neither equal, double, half nor larger on both sides.
"""
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, non_negative

from .base import Distiller


class ConvReg(nn.Module):
    """Student map (C_s, H_s, W_s) -> teacher map (C_t, H_t, W_t): a 3x3 stride-2 conv when the
    student's map is twice as large, a 4x4 stride-2 transposed conv when half as large, else a
    (1 + H_s - H_t) x (1 + W_s - W_t) conv; then BN and ReLU."""

    def __init__(self, s_shape, t_shape):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape[-3:], t_shape[-3:]
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise UserError(f"FitNet cannot map the student's {s_h}x{s_w} map to the teacher's "
                            f"{t_h}x{t_w} map: choose a hint_layer whose sizes are equal, "
                            f"double or half")
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class FitNet(Distiller):
    knobs = (Knob("hint_layer", 2, "FitNet: index of the feature hinted", non_negative),)

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        feats_s, feats_t = self.probe_feats(student), self.probe_feats(teacher)
        maps = min(len(feats_s), len(feats_t)) - 1          # the last feature is a vector
        self.layer = int(cfg.hint_layer)
        if not 0 <= self.layer < maps:
            raise UserError(f"hint_layer {cfg.hint_layer} is out of range: this pair has feature "
                            f"maps 0..{maps - 1}; set hint_layer to one of them")
        self.regressor = ConvReg(feats_s[self.layer].shape, feats_t[self.layer].shape)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"hint": F.mse_loss(self.regressor(feats_s[self.layer]), feats_t[self.layer])}
