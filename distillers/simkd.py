"""SimKD: Chen et al., "Knowledge Distillation with the Reused Teacher Classifier" (CVPR 2022);
github DefangChen/SimKD: the projector `SimKD` in `models/util.py`, its wiring in
`train_student.py` and `helper/loops.py`.

The student's last map f_s = feats[-2] goes through a projector P (1x1 conv to t/f channels,
3x3 conv, 1x1 conv to the teacher's t channels, each bias-free and followed by BatchNorm and
ReLU; f = simkd_factor, 2), after the larger of the two maps is average-pooled to the other's
side (the original reads only the height: square maps); the loss is

    L_simkd = mean over B x t x H x W of (P(f_s) - f_t)^2,        f_t = the teacher's feats[-2]

alone (its published command turns CE and KD off: gamma 0, alpha 0, beta 1). The teacher's
classifier, frozen, is reused: the deployed student is the student's backbone, the projector and
the teacher's classifier on the pooled projected map (`SimKDStudent`), larger than the bare
student; the run's test accuracy, its checkpoints and `evaluate.py` are that model's. The
student's own classifier is trained by nothing (it stays in the optimizer, so weight decay
shrinks it, as in the original); the epoch's train_acc is that classifier's (the original's
meter shows the deployed logits').

Refused: a teacher whose classifier does not read its feats[-2] (ShuffleV2's and MobileNetV2's
classifiers read a map one convolution further on), models without maps, and a simkd_factor above
the teacher's channel count (a bottleneck of no channel).
"""
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, at_least
from models.contract import classifier, classifier_weights

from .base import Distiller


class Projector(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions (no bias) with BatchNorm and ReLU: s -> t / f -> t / f -> t channels."""

    def __init__(self, channels_s, channels_t, factor):
        super().__init__()
        mid = channels_t // factor
        self.transfer = nn.Sequential(
            nn.Conv2d(channels_s, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels_t, 1, bias=False), nn.BatchNorm2d(channels_t), nn.ReLU(inplace=True))

    def forward(self, map_s, side_t):
        if map_s.shape[2] > side_t:
            map_s = F.adaptive_avg_pool2d(map_s, (side_t, side_t))
        return self.transfer(map_s)


class SimKDStudent(nn.Module):
    """The deployed SimKD student: logits = teacher classifier(avgpool(P(the student's feats[-2])))."""

    def __init__(self, student, projector, teacher_classifier, side_t):
        super().__init__()
        self.student, self.projector, self.classifier, self.side_t = student, projector, teacher_classifier, side_t

    def forward(self, x):
        feats, _ = self.student(x, is_feat=True)
        return self.head(feats[-2])

    def head(self, map_s):
        """The logits of the student's last map: projected, pooled, the teacher's classifier."""
        projected = self.projector(map_s, self.side_t)
        return self.classifier(F.adaptive_avg_pool2d(projected, 1).flatten(1))


class SimKD(Distiller):
    knobs = (Knob("simkd_factor", 2, "SimKD: the projector's bottleneck divides the teacher's channels by it",
                  at_least(1)),)

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        map_s, map_t = self.probe_feats(student)[-2], self.probe_feats(teacher)[-2]
        reads = classifier_weights(teacher)[0].shape[1]
        if map_s.dim() != 4 or map_t.dim() != 4 or reads != map_t.shape[1]:
            raise UserError(f"SimKD reuses the teacher's classifier on the projected student map, so the classifier "
                            f"must read the teacher's feats[-2] ({tuple(map_t.shape[1:])}), but it reads {reads} "
                            f"values: choose another teacher or method")
        if cfg.simkd_factor > map_t.shape[1]:
            raise UserError(f"simkd_factor {cfg.simkd_factor} leaves no channel in the projector's bottleneck: the "
                            f"teacher's feats[-2] has {map_t.shape[1]} channels, divided by simkd_factor: set "
                            f"simkd_factor {map_t.shape[1]} or less for this pair")
        self.side_t = map_t.shape[2]
        self.projector = Projector(map_s.shape[1], map_t.shape[1], int(cfg.simkd_factor))

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        map_s, map_t = feats_s[-2], feats_t[-2]
        if map_t.shape[2] > map_s.shape[2]:
            map_t = F.adaptive_avg_pool2d(map_t, (map_s.shape[2], map_s.shape[2]))
        return {"simkd": F.mse_loss(self.projector(map_s, self.side_t), map_t)}

    @property
    def deployed(self):
        return SimKDStudent(self.student, self.projector, classifier(self.teacher), self.side_t)

    @classmethod
    def deployment(cls, student, teacher, cfg):
        """The deployed model of a run of this method, built (untrained) to load its checkpoints."""
        return cls(student, teacher, cfg).deployed
