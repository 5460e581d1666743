"""MLKD: Jin et al., "Multi-Level Logit Distillation" (CVPR 2023); what the authors' code computes
(Jin-Ying/Multi-Level-Logit-Distillation, `mdistiller/distillers/KD_ours.py`, its two views in
`mdistiller/dataset/cifar100.py`), quirks included.

Every image comes as a weak view w (the training crop and flip) and a strong view s (crop, flip,
RandAugment(2) and Cutout: dataset/strong_view.py); student and teacher each run on both views
(the student in two forward passes, as the original: batch statistics per view). With z the
logits, the temperatures Ts = (kd_T, 3, 5, 2, 6) and p^T = softmax(z / T):
- KD(a, b, T) = T^2 mean_b KL(p_b^T || p_a^T); CC(T) = |P_t^T' P_t^T - P_s^T' P_s^T|^2 / classes
  (class correlations); BC(T) = |P_t^T P_t^T' - P_s^T P_s^T'|^2 / batch (batch correlations);
- m = the fraction of samples whose teacher confidence (max p_t of w) is at most its batch
  median, c = the fraction of classes whose summed teacher probability is at most its median:
  the original's masks multiply losses already averaged, so each is a global factor;
- mlkd_kd = m sum_T KD(w, T) + sum_{T in kd_T, 3, 5} KD(s, T) + sum_{T in 2, 6} KD(w, T) (the
  original's "strong" terms at 2 and 6 read the weak logits); mlkd_cc = c sum_T CC(w, T);
  mlkd_bc = m sum_T BC(w, T) (its strong-view CC and BC are computed and never used: not here);
- cross-entropy on both views: gamma (CE(w) + CE(s)); beta weighs the three terms (the original's
  KD_WEIGHT, 0.9; CE_WEIGHT 0.1, T 4). `logit_stand` standardises the logits of the KD terms only
  (the logit-standardisation fork's MLKD: T 2, weight 9). The medians are torch's (linear
  interpolation, np.percentile's 50): they stay on the device.
The step runs both views: the fast path (one view, drawn on the device) is refused in one line.
"""
import torch
import torch.nn.functional as F

from .base import LOGIT_STAND, Distiller
from .functional import hinton_kd, standardize

EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def correlation_gap(p_s, p_t, dim):
    """|G_t - G_s|^2 / n: G the Gram matrix over the batch (dim 0: classes x classes, over the
    classes count) or over the classes (dim 1: batch x batch, over the batch size)."""
    gram = (lambda p: p.t() @ p) if dim == 0 else (lambda p: p @ p.t())
    return (gram(p_t) - gram(p_s)).pow(2).sum() / p_s.shape[1 - dim]


class MLKD(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (LOGIT_STAND,)
    needs_feats = False
    teacher_reads = ("logits",)
    strong_view = True

    @classmethod
    def reads_labels(cls, cfg):
        return True  # its two views' cross-entropy and masks

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.logit_stand = bool(cfg.logit_stand)
        self.temperatures = (self.kd_T, *EXTRA_TEMPERATURES)

    def forward(self, image, target, index=None):
        weak, strong = image.split(len(target))
        s_w, s_s = self.student(weak), self.student(strong)
        losses = {"ce": self.gamma * (self.task_loss(s_w, target) + self.task_loss(s_s, target))}
        with torch.no_grad():
            t_w, t_s = self.teacher(weak), self.teacher(strong)
        if self.alpha:
            losses["kd"] = self.alpha * self.kd_term(s_w, t_w)
        if self.beta:
            terms = self.method_losses((s_w, s_s), (t_w, t_s), target)
            losses.update({name: self.beta * value for name, value in terms.items()})
        return s_w, losses

    def method_losses(self, logits_s, logits_t, target):
        (s_w, s_s), (t_w, t_s) = logits_s, logits_t
        p_t = F.softmax(t_w, dim=1)
        confidence = p_t.max(dim=1).values
        sample_share = (confidence <= confidence.quantile(0.5)).to(p_t.dtype).mean()
        class_mass = p_t.sum(dim=0)
        class_share = (class_mass <= class_mass.quantile(0.5)).to(p_t.dtype).mean()
        k_sw, k_tw, k_ss, k_ts = (standardize(z) for z in (s_w, t_w, s_s, t_s)) if self.logit_stand \
            else (s_w, t_w, s_s, t_s)
        kd = sample_share * sum(hinton_kd(k_sw, k_tw, T) for T in self.temperatures)
        kd = kd + sum(hinton_kd(k_ss, k_ts, T) for T in self.temperatures[:3])
        kd = kd + sum(hinton_kd(k_sw, k_tw, T) for T in self.temperatures[3:])
        probs = [(F.softmax(s_w / T, dim=1), F.softmax(t_w / T, dim=1)) for T in self.temperatures]
        return {"mlkd_kd": kd,
                "mlkd_cc": class_share * sum(correlation_gap(p_s, q, 0) for p_s, q in probs),
                "mlkd_bc": sample_share * sum(correlation_gap(p_s, q, 1) for p_s, q in probs)}
