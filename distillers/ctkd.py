"""CTKD: Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023); the global
temperature of zhengli97/CTKD (`models/temp_global.py`, its schedule in `train_student.py`, its
loop in `helper/loops.py`).

One learnt temperature T = ctkd_t_start + ctkd_t_end * sigmoid(theta), theta a parameter of the
distiller starting at 1 (T = 15.62 with the defaults 1 and 20), trained by the run's SGD with
the student (weight decay included, as the original's, which puts it in the student's
optimizer), through a gradient-reversal layer: the identity forward, the gradient times lambda
backward, lambda following the original's cosine schedule over epochs e (counted from 1):
  lambda(e) = min + (max - min) (1 + cos(pi min(e, L) / L)) / 2,
  max = ctkd_lambda_max (0), min = ctkd_lambda_min (-1), L = ctkd_lambda_loops (10),
-0.024 at epoch 1, -1 from epoch 10: lambda is negative, so T climbs the loss the student
descends (the original's layer multiplies by lambda, not -lambda).
L_method, at T (`ctkd_over`): kd, T^2 KL(softmax(z_t / T) || softmax(z_s / T)); dkd, DKD's
dkd_alpha TCKD + dkd_beta NCKD (the CTKD repository's DKDloss: no warm-up). `logit_stand`
standardises both logits of the KD (the logit-standardisation fork's CTKD, whose DKDloss reads the
raw logits: over DKD it changes nothing, as there). The CIFAR script: cross-
entropy 0.1 (gamma), KD 0.9 (beta: the KD at the learnt T is this method's term; alpha stays 0),
batch 64, lr 0.05. The instance-wise temperature is not in the repository (only behind a link):
not here.

Over DKD the masked teacher probability is exactly 0, and the original's `kl_div` then gives theta
a NaN gradient with today's PyTorch; so does its KD at a temperature small enough (about 0.2 and
below) for the teacher's softmax to underflow. Here the teacher side is in log space and such an
entry's gradient is its limit, 0 (docs/departures.md). Refused: ctkd_t_start <= 0 (T could reach 0).
"""
import math

import torch
import torch.nn as nn

from common.knobs import Knob, at_least, non_negative, one_of, positive

from .base import LOGIT_STAND, Distiller, Schedule
from .dkd import DKD_ALPHA, DKD_BETA, dkd_loss
from .functional import hinton_kd, standardize


class CosineSchedule(Schedule):
    """lambda(e) of the module's docstring (the original's CosineDecay)."""

    def __init__(self, high, low, loops):
        super().__init__()
        self.high, self.low, self.loops = float(high), float(low), int(loops)

    def value(self, epoch):
        return self.low + (self.high - self.low) * (1 + math.cos(math.pi * min(epoch, self.loops) / self.loops)) / 2


class ScaleGradient(torch.autograd.Function):
    """The identity forward; backward, the gradient times `scale` (a tensor: graph-safe)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        scale, = ctx.saved_tensors
        return grad * scale, None


class CTKD(Distiller):
    knobs = (
        Knob("ctkd_over", "kd", "CTKD: the loss taken at the learnt temperature, kd or dkd", one_of("kd", "dkd"),
             variant=True),
        Knob("ctkd_t_start", 1.0, "CTKD: T = ctkd_t_start + ctkd_t_end * sigmoid(theta)", positive),
        Knob("ctkd_t_end", 20.0, "CTKD: the range of the learnt temperature above ctkd_t_start", non_negative),
        Knob("ctkd_lambda_max", 0.0, "CTKD: the reversal strength's cosine schedule starts here (epoch 0)"),
        Knob("ctkd_lambda_min", -1.0, "CTKD: ... and ends here, from epoch ctkd_lambda_loops on"),
        Knob("ctkd_lambda_loops", 10, "CTKD: epochs of the cosine schedule of the reversal strength", at_least(1)),
        DKD_ALPHA,
        DKD_BETA,
        LOGIT_STAND,
    )
    needs_feats = False
    teacher_reads = ("logits",)

    @classmethod
    def reads_labels(cls, cfg):
        return cfg.ctkd_over == "dkd"  # DKD's target and non-target parts

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.theta = nn.Parameter(torch.ones(()))
        self.reversal = CosineSchedule(cfg.ctkd_lambda_max, cfg.ctkd_lambda_min, cfg.ctkd_lambda_loops)
        self.t_start, self.t_end = float(cfg.ctkd_t_start), float(cfg.ctkd_t_end)
        self.over, self.logit_stand = cfg.ctkd_over, bool(cfg.logit_stand)
        self.dkd_weights = float(cfg.dkd_alpha), float(cfg.dkd_beta)

    def temperature(self):
        return self.t_start + self.t_end * torch.sigmoid(ScaleGradient.apply(self.theta, self.reversal.factor))

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        T = self.temperature()
        if self.over == "dkd":
            return {"ctkd_dkd": dkd_loss(logits_s, logits_t, target, *self.dkd_weights, T)}
        if self.logit_stand:
            logits_s, logits_t = standardize(logits_s), standardize(logits_t)
        return {"ctkd_kd": hinton_kd(logits_s, logits_t, T)}
