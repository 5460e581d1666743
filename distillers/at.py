"""AT: Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017).

For the maps feats[1:-1] paired by position, Q = normalize(flatten(mean_c f_c^p)), p = 2, the
larger feature map adaptive-average-pooled to the smaller first; L = sum over pairs of
mean((Q_s - Q_t)^2).
"""
from .base import Distiller
from .functional import attention_loss


class AT(Distiller):
    p = 2

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        pairs = zip(feats_s[1:-1], feats_t[1:-1])
        return {"at": sum(attention_loss(f_s, f_t, self.p) for f_s, f_t in pairs)}
