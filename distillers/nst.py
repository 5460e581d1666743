"""NST: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer"
(arXiv 1707.01219, 2017), in the form of CRD's code.

For each map of feats[1:-1] paired by position, the larger of the two (student's or teacher's)
adaptive-average-pooled to the other's size; each channel's map flattened over positions and
L2-normalised; squared MMD with the polynomial kernel k(a, b) = (a . b)^2 between the student's
channels s and the teacher's t, each term averaged over samples and channel pairs:
L = sum over maps of [mean k(t, t') + mean k(s, s') - 2 mean k(s, t)].

Refused: a pair whose smaller map is 1x1 (each channel then normalises to +-1 or 0: the term
is constant and gives no gradient). Defined for every batch size (per-sample kernels).
"""
from common.errors import UserError

from .base import Distiller
from .functional import selectivity_mmd


class NST(Distiller):
    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        maps_s, maps_t = self.probe_feats(student)[1:-1], self.probe_feats(teacher)[1:-1]
        for f_s, f_t in zip(maps_s, maps_t):
            if min(f_s.shape[2] * f_s.shape[3], f_t.shape[2] * f_t.shape[3]) < 2:
                raise UserError(f"NST needs maps of at least 2 positions at feats[1:-1], got "
                                f"{tuple(f_s.shape[1:])} (student) and {tuple(f_t.shape[1:])} "
                                f"(teacher): use larger images or another method")

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        pairs = zip(feats_s[1:-1], feats_t[1:-1])
        return {"nst": sum(selectivity_mmd(f_s, f_t) for f_s, f_t in pairs)}
