"""CC: Peng et al., "Correlation Congruence for Knowledge Distillation" (ICCV 2019), in the form
of CRD's code: both last features (feats[-1]) embedded by trainable linear maps to feat_dim,
d = |e_s - e_t|, L = mean_i sum_k d[i, k] * d[i + 1, k] (consecutive samples of the batch).

Needs at least 2 samples in a batch (`min_batch`: one sample has no pair, the mean of nothing
is NaN); the loop drops a smaller final batch, and a smaller batch_size is refused.
"""
import torch.nn as nn

from common.knobs import Knob, positive

from .base import Distiller
from .functional import correlation_loss


class LinearEmbed(nn.Module):
    """x -> Linear(flatten(x)): CRD's LinearEmbed (the CC and CRD embeddings)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return self.linear(x.flatten(1))


FEAT_DIM = Knob("feat_dim", 128, "CRD/CC: embedding dimension", positive)


class CC(Distiller):
    teacher_reads = ("logits", "embedding")  # of its features, feats[-1] only
    knobs = (FEAT_DIM,)
    min_batch = 2  # a loss between samples

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        dim_s = self.probe_feats(student)[-1][0].numel()
        dim_t = self.probe_feats(teacher)[-1][0].numel()
        self.embed_s = LinearEmbed(dim_s, cfg.feat_dim)
        self.embed_t = LinearEmbed(dim_t, cfg.feat_dim)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"cc": correlation_loss(self.embed_s(feats_s[-1]), self.embed_t(feats_t[-1]))}
