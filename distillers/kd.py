"""HKD: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

L = gamma * CE + alpha * T^2 KL(softmax(z_t / T) || softmax(z_s / T)), T = kd_T (4 in the paper).
The KD term is the base class's (weighted by alpha); the method adds no term of its own.

`logit_stand true` (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024):
both logits z-scored per sample (`functional.standardize`) before the temperature; its
recipe is gamma 0.1, alpha 9, kd_T 2 (configs/kds/kd_ls/).
"""
from .base import LOGIT_STAND, Distiller
from .functional import hinton_kd, standardize


class HKD(Distiller):
    knobs = (LOGIT_STAND,)
    needs_feats = False
    teacher_reads = ("logits",)

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.logit_stand = bool(cfg.logit_stand)

    def kd_term(self, logits_s, logits_t):
        if self.logit_stand:
            logits_s, logits_t = standardize(logits_s), standardize(logits_t)
        return hinton_kd(logits_s, logits_t, self.kd_T)
