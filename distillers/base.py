"""The distiller interface shared by every method, and the plain cross-entropy "distiller".

A distiller is the model the loop trains: it owns the student and the method's extra trainable
modules, and returns the student logits with a dict of named, already weighted losses:

    total = gamma * CE + alpha * KD_T + beta * L_method          (the paper's code)

The weights are applied here, in `forward`, and nowhere else. A method implements
`method_losses` and returns its terms unweighted by beta (internal weights such as RKD's 25/50
or ASKD's w_rs/w_cs are part of the method and applied inside it).

The teacher is held outside the module tree: it is not in `parameters()`, `state_dict()`, any
optimizer or any DDP wrapper; it stays in eval mode with gradients off.

What a method reads of the teacher it declares in `teacher_reads`: ("logits",) for the logit
methods, ("logits", "embedding") for those that read only the pooled embedding `feats[-1]` besides,
and everything (the default, "feats") otherwise. Where it reads only logits or the embedding,
the loop may serve them from the teacher cache (helper/teacher_cache.py: the teacher's outputs
for every view the fast path can draw) instead of running the teacher; `feats_t` is then
`[embedding]` (or None), so `feats_t[-1]` is all such a method may touch.
"""
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn

from common.knobs import Knob, non_negative
from models.contract import forward_with_map

from .functional import hinton_kd, task_loss


class Distiller(nn.Module):
    knobs = ()          # the method's own config keys (common/knobs.py), with their defaults and rules
    needs_feats = True  # False: the method only needs logits, so skip is_feat=True
    min_batch = 1       # the smallest batch the losses are defined on (2: they compare samples)
    capturable = True   # False: the step reads the GPU from the host, so cuda_graph cannot hold it
    preact = False      # True: the features before each stage's last ReLU (forward(preact=True))
    teacher_preact = False  # True: the teacher's features are pre-activation even when preact is not
    teacher_train_mode = False  # True: the teacher follows the distiller's mode (BN batch statistics)
    check_settings = {}  # config values the method battery (helper/battery.py) runs it with
    check_pairs = ()     # (teacher, student) pairs the battery runs it on; empty: its default zoo pairs
    tunes = ()           # common keys besides beta (alpha, kd_T) its own terms read: tune.py searches them
    strong_view = False  # True: each batch of B images holds 2B, the weak views then the strong (MLKD)
    teacher_reads = ("feats", "logits")  # what losses read of the teacher: see the module docstring
    pooled_maps = False  # True: feats_s / feats_t also carry `.pooled_map`, the map each classifier pools

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__()
        self.student = student
        self._teacher = (teacher,) if teacher is not None else ()
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        self.gamma, self.alpha, self.beta = float(cfg.gamma), float(cfg.alpha), float(cfg.beta)
        self.kd_T = float(cfg.kd_T)
        self.label_smoothing = float(cfg.get("label_smoothing", 0.0))
        self._cached_teacher = ()

    @property
    def teacher(self):
        return self._teacher[0] if self._teacher else None

    def use_teacher_cache(self, lookup):
        """Serve the teacher's outputs from `lookup(index, view)` -> (feats_t, logits_t) for the
        batches that carry view numbers (kept, like the teacher, out of the module tree)."""
        self._cached_teacher = (lookup,)

    def teacher_outputs(self, image, index, view):
        """(feats_t, logits_t) of the teacher on this batch: its cached outputs when the batch
        says which view of which image each row is, else its forward pass."""
        if view is not None and self._cached_teacher:
            return self._cached_teacher[0](index, view)
        return self.features(self.teacher, image, self.preact or self.teacher_preact)

    def student_features(self, image):
        """(feats_s, logits_s) the method's terms read of the student (OFA-KD: its stages)."""
        return self.features(self.student, image, self.preact)

    def features(self, model, image, preact):
        """(feats, logits) of `model`; feats a MapFeatures where the method reads `pooled_maps`."""
        if not self.pooled_maps:
            return model(image, is_feat=True, preact=preact)
        feats, logits, pooled_map = forward_with_map(model, image, preact)
        return MapFeatures(feats, pooled_map), logits

    def train(self, mode=True):
        super().train(mode)
        if self.teacher is not None and self.teacher_train_mode:
            self.teacher.train(mode)
        return self

    @staticmethod
    @torch.no_grad()
    def probe_feats(model, batch=2):
        """Feature list of a dry forward pass in eval mode (BN statistics untouched): shapes only.
        The input is square, of the model's `input_size` (set from the data set; 32 if unset)."""
        param = next(model.parameters())
        was_training = model.training
        model.eval()
        size = getattr(model, "input_size", 32)
        feats, _ = model(torch.zeros(batch, 3, size, size, dtype=param.dtype, device=param.device),
                         is_feat=True)
        model.train(was_training)
        return feats

    def forward(self, image, target, index=None, view=None):
        if self.needs_feats:
            feats_s, logits_s = self.student_features(image)
        else:
            feats_s, logits_s = None, self.student(image)
        losses = {"ce": self.gamma * self.task_loss(logits_s, target)}
        if self.teacher is None:
            return logits_s, losses
        with torch.no_grad():
            feats_t, logits_t = self.teacher_outputs(image, index, view)
        if self.alpha:
            losses["kd"] = self.alpha * self.kd_term(logits_s, logits_t)
        if self.beta:
            terms = self.method_losses(feats_s, logits_s, feats_t, logits_t, target, index)
            losses.update({name: self.beta * value for name, value in terms.items()})
        return logits_s, losses

    def task_loss(self, logits, target):
        """The cross-entropy term (before gamma): hard labels, label-smoothed or Mixup's soft targets
        (functional.task_loss)."""
        return task_loss(logits, target, self.label_smoothing)

    @classmethod
    def reads_labels(cls, cfg):
        """Whether the method's own terms read the batch's labels (DKD's target class, CRD's
        sampling by class): such a method is refused with Mixup or CutMix, whose labels are soft.
        The others receive the soft targets as `target` (unread); the cross-entropy takes them."""
        return False

    def no_weight_decay(self):
        """The parameters timm's create_optimizer_v2 exempts from weight decay besides norms and
        biases: the student's own list (a ViT's position embedding and class token)."""
        names = self.student.no_weight_decay() if hasattr(self.student, "no_weight_decay") else ()
        return {f"student.{name}" for name in names}

    @property
    def deployed(self):
        """The model the run tests and saves: the student (SimKD: with its projector and the
        teacher's classifier)."""
        return self.student

    @classmethod
    def deployment(cls, student, teacher, cfg):
        """The deployed model of a run of this method, built from untrained `student` and
        `teacher` architectures, to load the run's checkpoints into (evaluate.py)."""
        return student

    def kd_term(self, logits_s, logits_t):
        """Hinton's KD at kd_T, weighted by alpha in `forward` (a method may change it: logit
        standardisation, CTKD's learnt temperature)."""
        return hinton_kd(logits_s, logits_t, self.kd_T)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        """The method's own terms, unweighted by beta: {name: scalar tensor}."""
        return {}

    def init_stage(self):
        """None, or an `InitStage` trained for `init_epochs` before the main training (FSP, AB,
        FT): the loop switches its modules' gradients on for the stage and trains them alone."""
        return None

    def start_epoch(self, epoch):
        """Called before each main-training epoch (counted from 1): moves every `Schedule`."""
        for module in self.modules():
            if isinstance(module, Schedule):
                module.start_epoch(epoch)


class MapFeatures(list):
    """A model's feature list, with `pooled_map`: the map its classifier pools (models/contract.py)."""

    def __init__(self, feats, pooled_map):
        super().__init__(feats)
        self.pooled_map = pooled_map


class InitStage(NamedTuple):
    """A stage before the main training: `modules` trained on `losses(image, target, index)
    -> {name: loss}` by their own SGD at learning rate `lr` (None: the config's)."""
    modules: nn.Module
    losses: Callable
    lr: Optional[float] = None


LOGIT_STAND = Knob("logit_stand", False, "KD, DKD, CTKD, MLKD: z-score each sample's logits over the classes "
                                         "before the temperature (logit standardisation, CVPR 2024)", variant=True)
WARMUP_EPOCHS = Knob("warmup_epochs", 20, "DKD, ReviewKD, RLD, LumiNet, SDD over dkd or nkd: the method's loss "
                     "ramps up as min(epoch / warmup_epochs, 1)", non_negative)


class Schedule(nn.Module):
    """A value that follows the epoch: `value(epoch)` is written into the device tensor `factor`
    at the start of each epoch (`Distiller.start_epoch`), so a captured CUDA graph follows it;
    not saved (resume sets it again)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("factor", torch.ones(()), persistent=False)

    def start_epoch(self, epoch):
        self.factor.fill_(self.value(epoch))

    def value(self, epoch):
        raise NotImplementedError


class WarmUp(Schedule):
    """A loss weight that ramps up as min(epoch / epochs, 1) (mdistiller's warm-up; epochs 0:
    always 1)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = int(epochs)

    def value(self, epoch):
        return min(epoch / self.epochs, 1.0) if self.epochs else 1.0

    def forward(self, loss):
        return self.factor * loss


class Vanilla(Distiller):
    """Plain cross-entropy training of one model (teachers, vanilla students): no teacher."""
    needs_feats = False

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, None, cfg)
