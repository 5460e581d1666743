"""NKD: Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
Approach with Normalized Loss and Customized Soft Labels" (ICCV 2023); the authors' loss
(yzd-v/cls_KD, branch 1.0, `mmcls/models/dis_losses/nkd.py`).

With g the true class, p = softmax(z) at temperature 1, and q^T = softmax over the classes other
than g of z / T (the true class dropped from both logits, so each side renormalised over the rest):
- target term: -mean_b p_t[g] log p_s[g], the teacher's probability a constant (no gradient);
- non-target term: -nkd_gamma T^2 mean_b sum_k q_t^T[k] log q_s^T[k];
L_method = target + non-target, T = kd_T; two cross-entropies, not KLs (the loss holds the
teacher's entropy and is not 0 when the student equals the teacher). NKD has no CIFAR
ResNet/WRN recipe: the configs take its one CIFAR config (res34 -> res18: T 3, gamma 3.5), weight
1 (beta) beside cross-entropy 1 (gamma). Any batch size works; fewer than 2 classes are refused.
"""
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, log_range, non_negative

from .base import Distiller


class NKD(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (Knob("nkd_gamma", 1.5, "NKD: weight of the normalised non-target term", non_negative,
                   space=log_range(0.5, 8.0)),)
    needs_feats = False
    teacher_reads = ("logits",)

    @classmethod
    def reads_labels(cls, cfg):
        return True  # its target and non-target parts

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.non_target_weight = float(cfg.nkd_gamma)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        batch, classes = logits_s.shape
        if classes < 2:
            raise UserError(f"NKD needs at least 2 classes (its second term is over the non-target "
                            f"classes), got logits of {classes}")
        g = target.unsqueeze(1)
        log_p_s_g = F.log_softmax(logits_s, dim=1).gather(1, g)
        p_t_g = F.softmax(logits_t, dim=1).gather(1, g).detach()
        target_term = -(p_t_g * log_p_s_g).mean()
        others = torch.arange(classes, device=target.device) != g  # (B, K), True off the true class
        T = self.kd_T
        rest_s, rest_t = (z[others].view(batch, classes - 1) / T for z in (logits_s, logits_t))
        cross = (F.softmax(rest_t, dim=1) * F.log_softmax(rest_s, dim=1)).sum(dim=1).mean()
        return {"nkd": target_term - self.non_target_weight * T ** 2 * cross}
