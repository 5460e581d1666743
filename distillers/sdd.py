"""SDD: Wei et al., "Scale Decoupled Distillation" (CVPR 2024); github shicaiwei123/SDD-CVPR2024:
`SDD_KD` in `mdistiller/distillers/KD.py`, `SDD_DKD.py`, `SDD_nkd.py`, the pyramid pooling `SPP`
in `mdistiller/models/cifar/utils.py`, `train_origin.py --M`.

Each model's classifier (with its bias) is applied to the regions of a spatial pyramid of the
map it pools (models/contract.py): the map average-pooled to 4 x 4, and from that the 2 x 2 and
1 x 1 levels; `sdd_scales` keeps the levels 1, 1,2 or 1,2,4 (1, 5 or 21 regions; region 0 is
the global logit). A logit loss is taken per (region, sample) row r over the N x B rows:

    L = sum_r w_r l_r / (N B),  w_r = 2 where the teacher's prediction of the region is right and its
                                      global one wrong, or the reverse; else 1

with l_r by `sdd_base`: kd, T^2 KL(softmax(t/T) || softmax(s/T)) (KD.py; NaN rows count 0);
dkd, DKD's dkd_alpha TCKD + dkd_beta NCKD at T (SDD_DKD.py); nkd, its own NKD port (SDD_nkd.py):
-p_t[y] log p_s[y] at T = 1 - dkd_beta T^2 sum over ALL classes of softmax(t/T) log softmax(s/T).
T = kd_T. The dkd and nkd losses ramp up as min(epoch / warmup_epochs, 1); kd has none (its
factor is commented out). With sdd_scales 1 each is the plain loss on the logits.

Quirks of the original, reproduced: its NKD port does not drop the target class (its mask is all
ones), so its "non-target" term is a softened cross-entropy over every class, about dkd_beta T^2
log(100) even when the student equals the teacher. Its NaN handling is not: where it replaces a
NaN or infinite loss by 0, here a non-finite loss stops the run as every one does.
"""
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, one_of
from models.contract import classifier_weights

from .base import WARMUP_EPOCHS, Distiller, WarmUp
from .catkd import require_classifiers_on_maps
from .dkd import DKD_ALPHA, DKD_BETA, dkd_rows

LEVELS = (1, 2, 4)


def pyramid(pooled_map, scales):
    """B x C x N region vectors: [1 x 1, 2 x 2 row-major, 4 x 4 row-major], the levels in `scales`,
    each pooled from the map's 4 x 4 average pooling."""
    fine = F.adaptive_avg_pool2d(pooled_map, 4)
    levels = {4: fine, 2: F.avg_pool2d(fine, 2), 1: F.avg_pool2d(fine, 4)}
    return torch.cat([levels[s].flatten(2) for s in LEVELS if s in scales], dim=2)


def region_logits(model, pooled_map, scales):
    """B x classes x N: the model's classifier (weight and bias) on each region's vector."""
    weight, bias = classifier_weights(model)
    scores = torch.einsum("bcn,kc->bkn", pyramid(pooled_map, scales), weight)
    return scores if bias is None else scores + bias[:, None]


def rows(patch):
    """B x K x N -> (N B) x K, region-major (row = region * B + sample)."""
    return patch.permute(2, 0, 1).reshape(-1, patch.shape[1])


def region_weights(patch_t, target):
    """(N B) weights: 2 where the teacher is right on the region and wrong globally, or the
    reverse; 1 elsewhere (the global rows included)."""
    right = patch_t.argmax(dim=1) == target[:, None]   # B x N
    return (1.0 + (right != right[:, :1]).to(patch_t.dtype)).t().reshape(-1)


def kd_rows(s, t, target, T):
    per_row = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="none").sum(dim=1) * T ** 2
    return torch.nan_to_num(per_row, nan=0.0)


def nkd_rows(s, t, target, T, gamma):
    """SDD's NKD port: -p_t[y] log p_s[y] (T = 1) - gamma T^2 sum_k softmax(t/T)_k log softmax(s/T)_k."""
    y = target[:, None]
    target_term = -(F.softmax(t, dim=1).gather(1, y) * F.log_softmax(s, dim=1).gather(1, y)).squeeze(1)
    cross = (F.softmax(t / T, dim=1) * F.log_softmax(s / T, dim=1)).sum(dim=1)
    return target_term - gamma * T ** 2 * cross


class SDD(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (
        Knob("sdd_scales", "1,2", "SDD: pyramid levels of the pooled map (its --M)", one_of("1", "1,2", "1,2,4")),
        Knob("sdd_base", "kd", "SDD: the logit loss of each region", one_of("kd", "dkd", "nkd"), variant=True),
        DKD_ALPHA,
        DKD_BETA,
        WARMUP_EPOCHS,
    )
    needs_feats = True
    pooled_maps = True

    @classmethod
    def reads_labels(cls, cfg):
        return True  # its regions' correctness weights

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        require_classifiers_on_maps(student, teacher, "SDD")
        self.scales = tuple(int(s) for s in cfg.sdd_scales.split(","))
        self.base = cfg.sdd_base
        self.alpha_dkd, self.beta_dkd = float(cfg.dkd_alpha), float(cfg.dkd_beta)
        self.warmup = WarmUp(cfg.warmup_epochs if self.base != "kd" else 0)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        if logits_s.shape[1] < 2:
            raise UserError(f"SDD needs at least 2 classes, got logits of {logits_s.shape[1]}")
        patch_s = region_logits(self.student, feats_s.pooled_map, self.scales)
        patch_t = region_logits(self.teacher, feats_t.pooled_map, self.scales)
        return {"sdd": self.warmup(self.region_loss(patch_s, patch_t, target))}

    def region_loss(self, patch_s, patch_t, target):
        """sum_r w_r l_r / (N B) over the rows of the B x K x N region logits."""
        regions = patch_s.shape[2]
        weight = region_weights(patch_t, target)
        s, t, y = rows(patch_s), rows(patch_t), target.repeat(regions)
        if self.base == "kd":
            per_row = kd_rows(s, t, y, self.kd_T)
        elif self.base == "dkd":
            per_row = dkd_rows(s, t, y, self.alpha_dkd, self.beta_dkd, self.kd_T)
        else:
            per_row = nkd_rows(s, t, y, self.kd_T, self.beta_dkd)
        return (weight * per_row).sum() / len(per_row)
