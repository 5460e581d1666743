"""SP: Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

On feats[-2]: G = F F^T over the batch (F: the maps flattened per sample), rows L2-normalised;
L = ||G_t - G_s||_F^2 / B^2.

Needs at least 2 samples in a batch (`min_batch`: one sample's Gram matrix is the constant 1);
the loop drops a smaller final batch, and a smaller batch_size is refused.
"""
from .base import Distiller
from .functional import similarity_loss


class SP(Distiller):
    min_batch = 2
    check_settings = {"beta": 3000.0}  # its paper's weight: the Gram-matrix loss is small  # a loss between samples

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"sp": similarity_loss(feats_s[-2], feats_t[-2])}
