"""TTM and WTTM: Zheng and Yang, "Knowledge Distillation Based on Transformed Teacher Matching"
(ICLR 2024); the authors' losses (zkxufo/TTM, `distiller_zoo/ttm.py`, `distiller_zoo/wttm.py`).

The teacher's probabilities raised to the power l = ttm_l and renormalised (a temperature 1/l
applied to the teacher alone), matched by the student at temperature 1:
  q = p_t^l / sum_k p_t[k]^l,   KL_b = sum_k q[k] (log q[k] - log softmax(z_s)[k]),
  TTM:  L_method = mean_b KL_b;
  WTTM: L_method = mean_b (sum_k p_t[b, k]^l) KL_b  (each sample weighted by its teacher's power
        sum, >= 1 for l < 1: a teacher-only weight with no gradient).
No T^2 factor; kd_T is not used. The repository gives values for vgg13 -> vgg8 only (its README):
TTM l 0.1, weight 45 (beta); WTTM l 0.2, weight 4 (from its CRD+WTTM command); the configs use
them for every pair. Any batch size works.
"""
import torch.nn.functional as F

from common.knobs import Knob, linear_range, positive

from .base import Distiller

TTM_L = Knob("ttm_l", 0.1, "TTM/WTTM: the power l of the transformed teacher p_t^l (1: KD at T 1)", positive,
             space=linear_range(0.05, 0.5))


def transformed_teacher_kl(logits_s, logits_t, l):
    """(KL_b of each sample, the teacher's power sum of each sample), as in the module docstring."""
    powered = F.softmax(logits_t, dim=1).pow(l)
    power_sum = powered.sum(dim=1)
    q = powered / power_sum.unsqueeze(1)
    return F.kl_div(F.log_softmax(logits_s, dim=1), q, reduction="none").sum(dim=1), power_sum


class TTM(Distiller):
    knobs = (TTM_L,)
    needs_feats = False
    teacher_reads = ("logits",)

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.l = float(cfg.ttm_l)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        kl, _ = transformed_teacher_kl(logits_s, logits_t, self.l)
        return {"ttm": kl.mean()}


class WTTM(TTM):
    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        kl, power_sum = transformed_teacher_kl(logits_s, logits_t, self.l)
        return {"wttm": (power_sum * kl).mean()}
