"""FSP: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning" (CVPR 2017).

The "flow" between consecutive maps of feats[:-1] (the larger pooled to the smaller):
G[c2, c1] = mean over positions of top[c2] * bottom[c1]; L = sum over pairs of
mean((G_s - G_t)^2). Student and teacher need the same channel counts at every position.
As in CRD's code, FSP is used only in an init stage: `init_stage()` hands the loop the
student's feature modules and this loss, trained for init_epochs; the main training then adds
no term of its own (cross-entropy, plus KD when alpha > 0).
"""
import torch

from common.errors import UserError

from .base import Distiller, InitStage
from .functional import fsp_loss


class FSP(Distiller):
    needs_feats = False  # the main training uses logits only

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        channels_s = [f.shape[1] for f in self.probe_feats(student)[:-1]]
        channels_t = [f.shape[1] for f in self.probe_feats(teacher)[:-1]]
        if channels_s != channels_t:
            raise UserError(f"FSP needs equal channel counts at every feature map, got student "
                            f"{channels_s} and teacher {channels_t}: choose another method or "
                            f"a pair of the same family and width")

    def init_stage(self):
        return InitStage(self.student.get_feat_modules(), self.init_losses)

    def init_losses(self, image, target, index=None):
        feats_s, _ = self.student(image, is_feat=True)
        with torch.no_grad():
            feats_t, _ = self.teacher(image, is_feat=True)
        return {"fsp": fsp_loss(feats_s[:-1], feats_t[:-1])}
