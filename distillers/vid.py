"""VID: Ahn et al., "Variational Information Distillation for Knowledge Transfer" (CVPR 2019),
in the form of CRD's code.

For each map of feats[1:-1] paired by position (the larger of the two pooled to the other's
size), the teacher's map t is modelled as a Gaussian around a regression of the student's map s:
mean mu(s) = 1x1 conv (C_s -> C_t), ReLU, 1x1 conv, ReLU, 1x1 conv (C_t -> C_t, no biases);
one variance per teacher channel, var_c = softplus(alpha_c) + eps, alpha_c starting where
var_c = init_pred_var. L = sum over maps of mean over (b, c, h, w) of
0.5 * ((mu_c(s) - t_c)^2 / var_c + log var_c). The regressors and alpha are trained with the
student (constants init_pred_var 5 and eps 1e-5, as the original's).

Defined for every batch size (a regression per sample) and every pair of maps: nothing to refuse.
"""
import math

import torch
import torch.nn as nn

from .base import Distiller
from .functional import gaussian_nll, pool_to_smaller


class VariationalRegressor(nn.Module):
    """Mean (three bias-free 1x1 convs with ReLUs, C_s -> C_t -> C_t -> C_t) and per-channel
    variance of the teacher's map given the student's."""

    def __init__(self, c_s, c_t, init_pred_var, eps):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(c_s, c_t, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(c_t, c_t, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(c_t, c_t, kernel_size=1, bias=False))
        # softplus^-1(init_pred_var - eps): the variance starts at init_pred_var
        self.log_scale = nn.Parameter(torch.full((c_t,), math.log(math.expm1(init_pred_var - eps))))
        self.eps = eps

    def forward(self, f_s, f_t):
        f_s, f_t = pool_to_smaller(f_s, f_t)
        return gaussian_nll(self.regressor(f_s), f_t, self.log_scale, self.eps)


class VID(Distiller):
    init_pred_var, eps = 5.0, 1e-5

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        maps_s, maps_t = self.probe_feats(student)[1:-1], self.probe_feats(teacher)[1:-1]
        self.regressors = nn.ModuleList(
            VariationalRegressor(f_s.shape[1], f_t.shape[1], self.init_pred_var, self.eps)
            for f_s, f_t in zip(maps_s, maps_t))

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        pairs = zip(self.regressors, feats_s[1:-1], feats_t[1:-1])
        return {"vid": sum(regressor(f_s, f_t) for regressor, f_s, f_t in pairs)}
