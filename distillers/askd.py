"""ASKD: "Attribute Structure Knowledge Distillation" (code: Crishawy/ASKD).

Two structure losses, each a smooth L1 (mean over all entries) between the student's and the
teacher's normalised distance matrices (`functional.normalized_distances`: pairwise distances
clamped at 1e-12 before the square root, zero diagonal, divided by the mean of the positive
entries over the whole batch; the teacher's without gradient):
- class structure L_cs, on the raw logits z (B, K): per sample the K x K matrix |z_i - z_j|;
- region structure L_rs, on the feature maps of `group` (res_last: feats[-2]; res_group:
  feats[1:-1]; target: feats[layer]), the student's passed through a trainable 1x1 conv (with
  bias) to the teacher's channels: each square map average-pooled into r'^2 regions per channel
  (r' = min(r, H_s, H_t), kernel = stride = H // r'), then per sample and channel the
  r'^2 x r'^2 matrix |p_a - p_b|; summed over the maps.
L_method = w_rs * L_rs + w_cs * L_cs (returned as two terms; a zero weight skips its term,
and w_rs 0 builds no 1x1 conv).

Refused (each loss would be undefined): r < 2 (one region per side has no distance to
normalise by), a map smaller than 2x2 or not square, maps that r splits into different grids.
Any batch size works: both structures are within a sample.
"""
import torch.nn as nn

from common.errors import UserError
from common.knobs import Knob, at_least, log_range, non_negative, one_of

from .base import Distiller
from .functional import distance_structure_loss, region_structure_loss


class ASKD(Distiller):
    knobs = (
        Knob("group", "res_last", "ASKD region loss on: res_last (feats[-2]), res_group (feats[1:-1]), "
                                  "target (feats[layer])", one_of("res_last", "res_group", "target")),
        Knob("r", 2, "ASKD: regions per side, at least 2 (clamped to the map size)", at_least(2)),
        Knob("w_rs", 5.0, "ASKD: weight of the region-structure loss", non_negative, space=log_range(0.5, 50.0)),
        Knob("w_cs", 14.0, "ASKD: weight of the class-structure loss", non_negative, space=log_range(1.4, 140.0)),
        Knob("layer", 2, "ASKD group target: index of the feature used", non_negative),
    )

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.r, self.w_rs, self.w_cs = int(cfg.r), float(cfg.w_rs), float(cfg.w_cs)
        feats_s, feats_t = self.probe_feats(student), self.probe_feats(teacher)
        # w_rs 0: no region term, so no 1x1 convs (no parameter without a gradient under DDP)
        self.positions = self._positions(cfg, len(feats_s), len(feats_t)) if self.w_rs else []
        self.adapters = nn.ModuleList()
        for i_s, i_t in self.positions:
            f_s, f_t = feats_s[i_s], feats_t[i_t]
            if f_s.dim() != 4 or f_t.dim() != 4 or f_s.shape[2] != f_s.shape[3] \
                    or f_t.shape[2] != f_t.shape[3]:
                raise UserError(f"ASKD's region structure needs square feature maps, got "
                                f"{tuple(f_s.shape[1:])} (student) and {tuple(f_t.shape[1:])} "
                                f"(teacher): choose another group or layer")
            h_s, h_t = f_s.shape[2], f_t.shape[2]
            r = min(self.r, h_s, h_t)
            if r < 2:
                raise UserError(f"ASKD's region structure needs maps of at least 2x2, got "
                                f"{h_s}x{h_s} (student) and {h_t}x{h_t} (teacher): choose another "
                                f"group or layer")
            if h_s // (h_s // r) != h_t // (h_t // r):
                raise UserError(f"ASKD: the student's {h_s}x{h_s} map and the teacher's {h_t}x{h_t} "
                                f"map do not split into the same regions with r {self.r}: "
                                f"choose an r that divides both sizes")
            self.adapters.append(nn.Conv2d(f_s.shape[1], f_t.shape[1], kernel_size=1))

    @staticmethod
    def _positions(cfg, n_s, n_t):
        """(student index, teacher index) of each map, as the original's slices of feats."""
        if cfg.group == "res_last":
            return [(-2, -2)]
        if cfg.group == "res_group":
            return [(i, i) for i in range(1, min(n_s, n_t) - 1)]
        if cfg.group == "target":
            maps = min(n_s, n_t) - 1  # the last feature is the pooled vector
            if not 0 <= cfg.layer < maps:
                raise UserError(f"ASKD group target: layer {cfg.layer} is out of range; this pair "
                                f"has feature maps 0..{maps - 1}: set layer to one of them")
            return [(int(cfg.layer), int(cfg.layer))]
        raise ValueError(f"unknown ASKD group '{cfg.group}'")  # the knob's rule refuses it first

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        terms = {}
        if self.w_rs:
            terms["askd_rs"] = self.w_rs * sum(
                region_structure_loss(adapter(feats_s[i_s]), feats_t[i_t], self.r)
                for adapter, (i_s, i_t) in zip(self.adapters, self.positions))
        if self.w_cs:
            terms["askd_cs"] = self.w_cs * distance_structure_loss(logits_s, logits_t, dim=1)
        return terms
