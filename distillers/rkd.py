"""RKD: Park et al., "Relational Knowledge Distillation" (CVPR 2019).

On feats[-1] (flattened): distance term, smooth L1 between the pairwise-distance matrices of
the batch, each divided by the mean of its positive entries (`functional.normalized_distances`,
the teacher's without gradient), weight 25; angle term, smooth L1 between the cosines of the
normalised difference vectors of all triplets, weight 50.

Needs at least 2 samples in a batch (`min_batch`: with one there is no distance to normalise
by); the loop drops a smaller final batch, and a smaller batch_size is refused.
"""
from .base import Distiller
from .functional import distance_structure_loss, rkd_angle


class RKD(Distiller):
    teacher_reads = ("logits", "embedding")  # of its features, feats[-1] only
    min_batch = 2  # a loss between samples
    w_distance, w_angle = 25.0, 50.0

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        f_s, f_t = feats_s[-1].flatten(1), feats_t[-1].flatten(1)
        return {"rkd_distance": self.w_distance * distance_structure_loss(f_s, f_t, dim=0),
                "rkd_angle": self.w_angle * rkd_angle(f_s, f_t)}
