"""KDSVD: Lee, Kim & Song, "Self-supervised Knowledge Distillation Using Singular Value
Decomposition" (ECCV 2018), in the form of CRD's code.

On the maps feats[1:-1] (paired by position, equal channel counts): per sample, each map
(C, H, W) as the (H*W) x C matrix of positions by channels; V_t its k = 1 leading right singular
vectors for the teacher, the student's k + 3 = 4 reduced to one per teacher vector (the one of
largest |cosine|, its sign matched); both scaled by the teacher's L2-normalised singular values.
Between consecutive maps l - 1, l: G[c, c'] = exp(-(V^l[c] - V^(l-1)[c'])^2 / 8), and
L = sum over l of ||G_s - G_t||^2 / B (teacher side without gradient, non-finite entries
zeroed). The teacher's singular-vector signs come from LAPACK and enter G, as in the original.

mdistiller's KDSVD differs: it decomposes each map as the (C*H) x W matrix (right singular
vectors over the width, not the channels), in float32, on mdistiller's feats[1:] (the same
post-ReLU stage outputs).

Refused: `cuda_graph` (the SVD's convergence check reads the GPU from the host); pairs whose
channel counts differ at any map of feats[1:-1] (the cosines compare
channel vectors), and fewer than 2 paired maps (no consecutive pair: no loss). Defined for
every batch size (per-sample decompositions).
"""
from common.errors import UserError

from .base import Distiller
from .functional import kdsvd_loss


class KDSVD(Distiller):
    k = 1  # teacher singular vectors per map (the original's default)
    capturable = False  # a batched SVD on CUDA checks its convergence on the host

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        maps_s, maps_t = self.probe_feats(student)[1:-1], self.probe_feats(teacher)[1:-1]
        pairs = list(zip(maps_s, maps_t))
        channels_s = [f_s.shape[1] for f_s, _ in pairs]
        channels_t = [f_t.shape[1] for _, f_t in pairs]
        if channels_s != channels_t:
            raise UserError(f"KDSVD needs equal channel counts at the maps feats[1:-1], got "
                            f"student {channels_s} and teacher {channels_t}: choose another "
                            f"method or a pair of the same family and width")
        if len(pairs) < 2:
            raise UserError(f"KDSVD compares consecutive maps and needs at least 2 in feats[1:-1] "
                            f"of both models, got {len(pairs)}: choose another method")

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"kdsvd": kdsvd_loss(feats_s[1:-1], feats_t[1:-1], self.k)}
