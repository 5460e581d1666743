"""AB: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by
Hidden Neurons" (AAAI 2019).

The student learns where each teacher neuron is active. For the pre-activation maps
feats[1:-1] (`preact=True`: before each stage's last ReLU), paired by position, a connector C_i
brings the student's map to the teacher's shape (none when they agree, else FitNet's conv
chosen by the sizes, then BN, no ReLU). With s = C_i(f_s), t = f_t, margin m = 1:

    l_i = sum of (s + m)^2 [s > -m and t <= 0] + (s - m)^2 [s <= m and t > 0]
    L = sum over the n maps of 2^(i - n + 1) * 3 * l_i / (1000 * B)        (B: the batch)

As in CRD's code, AB is an init stage only: the connectors and the student's feature modules
(not its classifier) are trained on L for init_epochs with the rest of the student in eval mode
(its BN statistics move only inside the feature modules); the main training adds no term
(cross-entropy, plus KD when alpha > 0: beta has no effect) and keeps the connectors
untrained. Like the original it runs the student with preact=True there too, which matters for
WRN students: their preact features pass three BNs a second time, moving those BNs' running
statistics twice a step.

Refused: a pair whose numbers of feature maps differ, or with a student map that no connector
maps to the teacher's (smaller, but not half as large); init_epochs 0 (AB would train nothing).
Per-sample terms: any batch size works.
"""
import torch
import torch.nn as nn

from common.errors import UserError

from .base import Distiller, InitStage
from .fitnet import ConvReg


class Connector(ConvReg):
    """FitNet's regressor without its final ReLU (CRD's ConvReg with use_relu=False)."""

    def forward(self, x):
        return self.bn(self.conv(x))


class AB(Distiller):
    preact = True  # the original's main training also asks for preact features (WRN's BNs)
    margin = 1.0

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        if cfg.init_epochs < 1:
            raise UserError("AB trains only in its init stage: set init_epochs to 1 or more "
                            "(30 in the paper's code)")
        shapes_s = [f.shape[1:] for f in self.probe_feats(student)[1:-1]]
        shapes_t = [f.shape[1:] for f in self.probe_feats(teacher)[1:-1]]
        if len(shapes_s) != len(shapes_t):
            raise UserError(f"AB pairs the feature maps by position, but the student has "
                            f"{len(shapes_s)} and the teacher {len(shapes_t)}: choose another method")
        self.connectors = nn.ModuleList([self.connector(s, t) for s, t in zip(shapes_s, shapes_t)])
        self.connectors.requires_grad_(False)  # trained in the init stage only

    @staticmethod
    def connector(shape_s, shape_t):
        if shape_s == shape_t:
            return nn.Identity()
        try:
            return Connector(shape_s, shape_t)
        except UserError:
            raise UserError(f"AB cannot connect the student's {tuple(shape_s)} map to the teacher's "
                            f"{tuple(shape_t)}: choose another method for this pair") from None

    def boundary_loss(self, maps_s, maps_t):
        """L above, for the student's and the teacher's pre-activation maps."""
        n, m = len(maps_s), self.margin
        total = 0.0
        for i, (connect, f_s, f_t) in enumerate(zip(self.connectors, maps_s, maps_t)):
            s = connect(f_s)
            wrong_side = (s + m).pow(2) * ((s > -m) & (f_t <= 0)) + (s - m).pow(2) * ((s <= m) & (f_t > 0))
            total = total + 2.0 ** (i - n + 1) * wrong_side.sum()
        return total * 3 / (1000 * maps_s[0].shape[0])

    def init_stage(self):
        return InitStage(nn.ModuleList([self.connectors, self.student.get_feat_modules()]),
                         self.init_losses)

    def init_losses(self, image, target, index=None):
        feats_s, _ = self.student(image, is_feat=True, preact=True)
        with torch.no_grad():
            feats_t, _ = self.teacher(image, is_feat=True, preact=True)
        return {"ab": self.boundary_loss(feats_s[1:-1], feats_t[1:-1])}
