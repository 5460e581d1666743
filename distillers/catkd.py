"""CAT-KD: Guo et al., "Class Attention Transfer Based Knowledge Distillation" (CVPR 2023); github
GzyAftermath/CAT-KD, `mdistiller/distillers/CAT_KD.py` with its `*_test` models and
`configs/cifar100/CAT_KD/`.

Each model's class activation maps: its classifier's weight W (classes x C) applied as a 1x1
convolution, without bias, to the map that classifier pools (models/contract.py), A = W * M
(classes x H x W per sample). Both are average-pooled to R x R (R = cat_resolution), optionally
L2-normalised over the R x R positions of each (sample, class) (cat_normalize), and compared:

    L_cat = mean over N x classes x R x R of (P(A_s) - P(A_t))^2

No KD term; CE (gamma 1) on the student's logits. The original's quirk, reproduced: its `_test`
models have no classifier bias (the teacher's trained bias is dropped from its CAM; the
student is trained and deployed without one), so here the student's classifier bias is set to
0 and frozen: its logits, in training and in the checkpoints, are the bias-free ones.

Refused: a model whose classifier does not read the pooled map directly (a head of several
layers, a ViT's tokens).
"""
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, at_least
from models.contract import classifier, classifier_weights, forward_with_map, reads_pooled_map

from .base import Distiller


def class_activation_map(model, pooled_map):
    """The model's classifier weight applied, without bias, at every position of its pooled map."""
    weight, _ = classifier_weights(model)
    return torch.einsum("nchw,kc->nkhw", pooled_map, weight)


@torch.no_grad()
def require_classifiers_on_maps(student, teacher, method):
    """Refuse, in one line, a model whose classifier does not read the map it pools (a dry forward)."""
    for role, model in (("student", student), ("teacher", teacher)):
        param = next(model.parameters())
        size = getattr(model, "input_size", 32)
        was_training = model.training
        feats, _, the_map = forward_with_map(model.eval(), torch.zeros(2, 3, size, size, dtype=param.dtype,
                                                                       device=param.device))
        model.train(was_training)
        if not reads_pooled_map(model, feats, the_map):
            raise UserError(f"{method} applies each classifier to the map it pools, and the {role} "
                            f"{type(model).__name__}'s classifier reads no such map: choose another method or model")


def cat_loss(cam_s, cam_t, resolution, normalize):
    pooled_s = F.adaptive_avg_pool2d(cam_s, resolution)
    pooled_t = F.adaptive_avg_pool2d(cam_t, resolution)
    if normalize:
        pooled_s, pooled_t = F.normalize(pooled_s, dim=(2, 3)), F.normalize(pooled_t, dim=(2, 3))
    return F.mse_loss(pooled_s, pooled_t)


class CATKD(Distiller):
    knobs = (
        Knob("cat_resolution", 2, "CAT-KD: side R of the pooled class activation maps", at_least(1)),
        Knob("cat_normalize", True, "CAT-KD: L2-normalise each pooled map over its R x R positions"),
    )
    pooled_maps = True

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.resolution, self.normalize = int(cfg.cat_resolution), bool(cfg.cat_normalize)
        require_classifiers_on_maps(student, teacher, "CAT-KD")
        bias = classifier(student).bias
        if bias is not None:  # the original's students have none
            with torch.no_grad():
                bias.zero_()
            bias.requires_grad_(False)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        cam_s = class_activation_map(self.student, feats_s.pooled_map)
        cam_t = class_activation_map(self.teacher, feats_t.pooled_map)
        return {"cat": cat_loss(cam_s, cam_t, self.resolution, self.normalize)}
