"""PKT: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge
Transfer" (ECCV 2018), in the form of CRD's code.

On feats[-1]: each model's features as conditional probabilities over the batch,
p_ij = k_ij / sum_j k_ij with k_ij = (cos(f_i, f_j) + 1) / 2 (each feature divided by its
norm + eps); L = mean over i, j of p^t_ij log((p^t_ij + eps) / (p^s_ij + eps)), eps 1e-7.
(The original also zeroes NaN entries of the normalised features; finite features never have
any.)

Needs at least 2 samples in a batch (`min_batch`: one sample's probability is the constant 1,
the loss 0); the loop drops a smaller final batch, and a smaller batch_size is refused.
"""
from .base import Distiller
from .functional import probability_transfer_loss


class PKT(Distiller):
    teacher_reads = ("logits", "embedding")  # of its features, feats[-1] only
    min_batch = 2  # a loss between samples

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"pkt": probability_transfer_loss(feats_s[-1], feats_t[-1])}
