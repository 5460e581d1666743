"""RLD: Zhang et al., "Rethinking Logit Distillation" (ICCV 2025); the loss and defaults of
zju-SWJ/RLD (`mdistiller/distillers/RLD.py`, `mdistiller/engine/cfg.py`).

With g the true class and m the teacher's top class:
- SCD: T_a^2 KL([p_t[m], 1 - p_t[m]] || [p_s[g], 1 - p_s[g]]), p = softmax(z / T_a), T_a =
  rld_alpha_T: the student's probability of the TRUE class against the teacher's probability
  of ITS top class, batch mean;
- MCD: T^2 KL(softmax(z_t / T) || softmax(z_s / T)) over the classes the teacher ranks below
  the true class only (every class whose teacher logit is >= that of g, g included, is masked
  out of both sides), T = kd_T, batch mean; 0 for a sample whose true class the teacher ranks
  last;
L_method = min(epoch / warmup_epochs, 1) * (rld_alpha * SCD + rld_beta * MCD). The defaults:
rld_alpha 1, rld_beta 8, T 4, warm-up 20, cross-entropy 1; rld_alpha_T 1, and 4 (= T) with
the README's `--same-t`, which the configs follow. The binary probabilities are taken in log
space (as DKD's here), the original's sum-then-log without its underflow. Any batch size works.
"""
import torch.nn.functional as F

from common.knobs import Knob, log_range, non_negative, positive

from .base import WARMUP_EPOCHS, Distiller, WarmUp
from .functional import hinton_kd, log_binary


def rld_loss(logits_s, logits_t, target, alpha, beta, T, alpha_T):
    """alpha * SCD + beta * MCD (the module's docstring); the teacher side taken as given."""
    top = logits_t.argmax(dim=1)
    scd = F.kl_div(log_binary(logits_s, target, alpha_T), log_binary(logits_t, top, alpha_T),
                   reduction="batchmean", log_target=True) * alpha_T ** 2
    above = logits_t >= logits_t.gather(1, target.unsqueeze(1))
    mcd = hinton_kd(logits_s.masked_fill(above, -1e9 * T), logits_t.masked_fill(above, -1e9 * T), T)
    return alpha * scd + beta * mcd


class RLD(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (
        Knob("rld_alpha", 1.0, "RLD: weight of the sample-confidence term (SCD)", non_negative,
             space=log_range(0.25, 4.0)),
        Knob("rld_beta", 8.0, "RLD: weight of the masked-correlation term (MCD)", non_negative,
             space=log_range(1.0, 16.0)),
        Knob("rld_alpha_T", 1.0, "RLD: temperature of SCD (the README's --same-t: equal to kd_T)", positive),
        WARMUP_EPOCHS,
    )
    needs_feats = False
    teacher_reads = ("logits",)

    @classmethod
    def reads_labels(cls, cfg):
        return True  # its target class

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.weights = float(cfg.rld_alpha), float(cfg.rld_beta)
        self.alpha_T = float(cfg.rld_alpha_T)
        self.warmup = WarmUp(cfg.warmup_epochs)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"rld": self.warmup(rld_loss(logits_s, logits_t, target, *self.weights, self.kd_T, self.alpha_T))}
