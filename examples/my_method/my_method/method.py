"""EmbedCosine: the student's pooled embedding, mapped by a trained linear layer W to the
teacher's width, is pulled towards the teacher's by its cosine:

    L_method = cos_weight * mean_b (1 - cos(W f_s[b], f_t[b])),   f = feats[-1]

One knob of its own (`cos_weight`), one module of its own (W); the shapes come from a dry
forward pass. Any batch size works (each sample on its own).
"""
import torch.nn as nn
import torch.nn.functional as F

from common.knobs import Knob, non_negative
from distillers.base import Distiller


class EmbedCosine(Distiller):
    knobs = (Knob("cos_weight", 1.0, "EmbedCosine: weight of the embedding-cosine term", non_negative),)

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        dim_s = self.probe_feats(student)[-1][0].numel()
        dim_t = self.probe_feats(teacher)[-1][0].numel()
        self.project = nn.Linear(dim_s, dim_t)
        self.cos_weight = float(cfg.cos_weight)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        cosine = F.cosine_similarity(self.project(feats_s[-1].flatten(1)), feats_t[-1].flatten(1), dim=1)
        return {"embed_cos": self.cos_weight * (1 - cosine).mean()}
