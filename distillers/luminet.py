"""LumiNet: Hossain et al., "LumiNet: Perception-Driven Knowledge Distillation via Statistical
Logit Calibration" (TMLR 2025); the loss and configs of ismail31416/LumiNet
(`mdistiller/distillers/Luminet.py`, `configs/cifar100/luminet/`).

Each class's logit is standardised over the batch, for the student and the teacher apart:
  h = (z - mean_batch z) / sqrt(var_batch z + 1e-5)   (the biased variance, per class),
L_method = min(epoch / warmup_epochs, 1) * luminet_alpha^2 KL(softmax(h_t / T) || softmax(h_s / T)),
batch mean, T = kd_T; the scale is alpha^2, not T^2, and the labels are unused. Its configs:
resnet32x4 -> resnet8x4 alpha 33, T 4, cross-entropy 2; ResNet50 -> MobileNetV2 and vgg13 ->
MobileNetV2 70, 8, 2; wrn_40_2 -> ShuffleV1 35, 4, 1; wrn_40_2 -> wrn_40_1 75, 8, 1; the other
pairs its defaults 31, 4, 2; warm-up 20.

Refused: a batch of one (`min_batch` 2): every standardised logit is 0 and the loss has no
gradient; in a batch each sample's loss depends on the others.
"""
import torch

from common.knobs import Knob, non_negative

from .base import WARMUP_EPOCHS, Distiller, WarmUp
from .functional import hinton_kd


def batch_standardize(logits, eps=1e-5):
    """Each class (column) z-scored over the batch, with the biased variance."""
    mean = logits.mean(dim=0, keepdim=True)
    return (logits - mean) / torch.sqrt(logits.var(dim=0, unbiased=False, keepdim=True) + eps)


class LumiNet(Distiller):
    tunes = ("kd_T",)  # common keys its own terms read (tune.py searches them)
    knobs = (Knob("luminet_alpha", 31.0, "LumiNet: the KL's scale is luminet_alpha^2", non_negative),
             WARMUP_EPOCHS)
    needs_feats = False
    teacher_reads = ("logits",)
    min_batch = 2  # a class standardised over one sample is 0

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.scale = float(cfg.luminet_alpha) ** 2
        self.warmup = WarmUp(cfg.warmup_epochs)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        T = self.kd_T
        kl = hinton_kd(batch_standardize(logits_s), batch_standardize(logits_t), T) / T ** 2
        return {"luminet": self.warmup(self.scale * kl)}
