"""DIST: Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022); the loss
and CIFAR recipe of hunto/image_classification_sota (`lib/models/losses/dist_kd.py`,
`configs/strategies/distill/dist_cifar.yaml`).

With y = softmax(z / T) of the student (s) and the teacher (t), T = kd_T, and
rho(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8) (Pearson):
- inter-class relation: 1 - mean_i rho(y_s[i, :], y_t[i, :]), over each sample's classes;
- intra-class relation: 1 - mean_c rho(y_s[:, c], y_t[:, c]), over each class's batch;
L_method = T^2 (dist_beta * inter + dist_gamma * intra); no KL. The CIFAR recipe: T 4, dist_beta =
dist_gamma = 1, weight 2 (beta), cross-entropy weight 1 (gamma).

Refused: a batch of one (`min_batch` 2): the intra-class relation of one sample is the constant
dist_gamma * T^2 with no gradient (the original's hook would not even keep its batch axis).
"""
from common.knobs import Knob, log_range, non_negative

from .base import Distiller
from .functional import softmax_pearson_distance


class DIST(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (
        Knob("dist_beta", 1.0, "DIST: weight of the inter-class (per-sample) relation", non_negative,
             space=log_range(0.25, 4.0)),
        Knob("dist_gamma", 1.0, "DIST: weight of the intra-class (per-class, over the batch) relation", non_negative,
             space=log_range(0.25, 4.0)),
    )
    needs_feats = False
    teacher_reads = ("logits",)
    min_batch = 2  # the intra-class relation correlates the samples of a batch

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.inter_weight, self.intra_weight = float(cfg.dist_beta), float(cfg.dist_gamma)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        T = self.kd_T
        y_s, y_t = (logits_s / T).softmax(dim=1), (logits_t / T).softmax(dim=1)
        inter = softmax_pearson_distance(y_s, y_t)
        intra = softmax_pearson_distance(y_s.t(), y_t.t())
        return {"dist": T ** 2 * (self.inter_weight * inter + self.intra_weight * intra)}
