"""DeiT's distillation token: Touvron et al., "Training data-efficient image transformers &
distillation through attention" (ICML 2021); what facebookresearch/deit computes (`losses.py`
DistillationLoss, `models.py` the distilled ViTs, which timm ships as
`deit_*_distilled_patch16_224`).

The student, a ViT with a distillation token, returns two logits in training: z_cls of its class
token and z_dist of its distillation token. The class head learns the label with the run's
cross-entropy (hard, label-smoothed or Mixup's soft targets), the distillation head the teacher
(which sees the same images):

    soft: tau^2 sum KL(softmax(z_t / tau) || softmax(z_dist / tau)) / (B C)   (divided by the batch
          and the classes, as the original: its "legacy" reduction)
    hard: CE(z_dist, argmax z_t)   (no smoothing)
    L = gamma (1 - deit_alpha) CE(z_cls, y) + beta deit_alpha L_dist;   none: gamma CE(z_cls, y) alone
    (gamma and beta 1 in the shipped configs: DeiT's own weights are deit_alpha's)

At test time the two heads are averaged: timm's model does so in eval mode, so the run's
evaluation, its checkpoints and evaluate.py score (z_cls + z_dist) / 2. `deit_distillation` is
DeiT's README recipe's `hard` by default (its main.py's default, none, trains the class head
alone). Any teacher the project loads teaches. Refused: soft or hard with a student without a
distillation head.
"""
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, Rule, linear_range, one_of, positive

from .base import Distiller


def deit_distillation(dist_logits, logits_t, kind, tau):
    """L_dist of the module docstring."""
    if kind == "hard":
        return F.cross_entropy(dist_logits, logits_t.argmax(dim=1))
    return F.kl_div(F.log_softmax(dist_logits / tau, dim=1), F.log_softmax(logits_t / tau, dim=1),
                    reduction="sum", log_target=True) * tau ** 2 / dist_logits.numel()


class DeiT(Distiller):
    knobs = (
        Knob("deit_distillation", "hard", "DeiT: what the distillation head learns of the teacher, none, soft "
                                          "(its softmax at deit_tau) or hard (its argmax)",
             one_of("none", "soft", "hard")),
        Knob("deit_alpha", 0.5, "DeiT: the distillation head's share of the loss, the class head's 1 - deit_alpha",
             Rule(lambda v: 0 <= v <= 1, "in [0, 1]", (-0.1, 1.1)), space=linear_range(0.1, 0.9)),
        Knob("deit_tau", 1.0, "DeiT: the temperature of soft distillation", positive, space=linear_range(1.0, 8.0)),
    )
    needs_feats = False
    teacher_reads = ("logits",)
    check_pairs = (("resnet14", "timm:deit_tiny_distilled_patch16_224"),)  # the battery's: a distilled ViT student

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.kind, self.share, self.tau = cfg.deit_distillation, float(cfg.deit_alpha), float(cfg.deit_tau)
        heads = hasattr(student, "set_distilled_training")
        if self.kind != "none" and not heads:
            raise UserError(f"deit_distillation {self.kind} teaches the student's distillation head, which "
                            f"{type(student).__name__} has not: choose a distilled ViT (timm:deit_tiny_distilled_"
                            f"patch16_224) or deit_distillation none")
        if heads:
            student.set_distilled_training(True)  # two outputs in training, their mean in evaluation

    def forward(self, image, target, index=None, view=None):
        out = self.student(image)
        cls, dist = out if isinstance(out, tuple) else (out, None)
        logits = cls if dist is None else (cls + dist) / 2  # what evaluation scores
        if self.kind == "none":
            return logits, {"ce": self.gamma * self.task_loss(cls, target)}
        with torch.no_grad():
            _, logits_t = self.teacher_outputs(image, index, view)
        losses = {"ce": self.gamma * (1 - self.share) * self.task_loss(cls, target),
                  "deit": self.beta * self.share * deit_distillation(dist, logits_t, self.kind, self.tau)}
        if self.alpha:  # Hinton's KD on the class head, as any method's alpha (the shipped configs: 0)
            losses["kd"] = self.alpha * self.kd_term(cls, logits_t)
        return logits, losses
