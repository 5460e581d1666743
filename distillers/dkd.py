"""DKD: Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022); defaults from mdistiller.

With p = softmax(z / T) of the student (s) and the teacher (t) and g the true class:
- TCKD = T^2 KL([p_t,g, 1 - p_t,g] || [p_s,g, 1 - p_s,g]), the binary target/non-target split;
- NCKD = T^2 KL(p~_t || p~_s), p~ = softmax over the non-target classes only;
each summed over its classes and averaged over the batch.
L_method = min(epoch / warmup_epochs, 1) * (dkd_alpha * TCKD + dkd_beta * NCKD), epochs counted
from 1 (`WarmUp`; warmup_epochs 0: no ramp). mdistiller: CE weight 1 (gamma), ALPHA 1, BETA 8,
T 4 (kd_T), WARMUP 20; its per-pair files set BETA 2 for res110 -> res32 and res56 -> res20, 6 for
wrn_40_2 -> wrn_16_2 / wrn_40_1 and vgg13 -> MobileNetV2 / vgg8. beta (the method weight) is 1.

The binary probabilities are taken in log space (log p_g and the log-sum-exp of the others),
which is the original's sum-then-log without its underflow; NCKD masks the true class as the
original does, by subtracting 1000 from its tempered logit.

`logit_stand true`: both logits z-scored per sample before the temperature (Sun et al., CVPR
2024; its DKD recipe: dkd_alpha and dkd_beta times 9, kd_T 2: configs/kds/dkd_ls/).

Refused: dkd_alpha < 0 or dkd_beta < 0 (a negative KL weight), warmup_epochs < 0, and logits
of fewer than 2 classes (no non-target class: both KLs are undefined).
"""
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, linear_range, log_range, non_negative

from .base import LOGIT_STAND, WARMUP_EPOCHS, Distiller, WarmUp
from .functional import log_binary, standardize


def dkd_rows(logits_s, logits_t, target, alpha, beta, T):
    """alpha * TCKD + beta * NCKD of each sample (see the module's docstring); the teacher side is
    taken as given (call it without gradient)."""
    true_class = torch.arange(logits_s.shape[1], device=target.device) == target.unsqueeze(1)  # (B, K)
    tckd = F.kl_div(log_binary(logits_s, target, T), log_binary(logits_t, target, T), reduction="none",
                    log_target=True).sum(dim=1)
    mask = 1000.0 * T * true_class  # z / T - 1000 on the true class: its probability is 0
    nckd = F.kl_div(F.log_softmax((logits_s - mask) / T, dim=1), F.log_softmax((logits_t - mask) / T, dim=1),
                    reduction="none", log_target=True).sum(dim=1)
    return (alpha * tckd + beta * nckd) * T ** 2


def dkd_loss(logits_s, logits_t, target, alpha, beta, T):
    """alpha * TCKD + beta * NCKD, averaged over the batch."""
    return dkd_rows(logits_s, logits_t, target, alpha, beta, T).mean()


DKD_ALPHA = Knob("dkd_alpha", 1.0, "DKD: weight of the target-class KL (TCKD)", non_negative,
                 space=linear_range(0.5, 2.0))
DKD_BETA = Knob("dkd_beta", 8.0, "DKD: weight of the non-target-class KL (NCKD)", non_negative,
                space=log_range(1.0, 16.0))


class DKD(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (
        DKD_ALPHA,
        DKD_BETA,
        WARMUP_EPOCHS,
        LOGIT_STAND,
    )
    needs_feats = False
    teacher_reads = ("logits",)

    @classmethod
    def reads_labels(cls, cfg):
        return True  # its target and non-target parts

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.logit_stand = bool(cfg.logit_stand)
        self.tckd_weight, self.nckd_weight = float(cfg.dkd_alpha), float(cfg.dkd_beta)
        self.warmup = WarmUp(cfg.warmup_epochs)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        if logits_s.shape[1] < 2:
            raise UserError(f"DKD needs at least 2 classes (it splits the target class from the "
                            f"others), got logits of {logits_s.shape[1]}")
        if self.logit_stand:
            logits_s, logits_t = standardize(logits_s), standardize(logits_t)
        return {"dkd": self.warmup(dkd_loss(logits_s, logits_t, target, self.tckd_weight,
                                            self.nckd_weight, self.kd_T))}
