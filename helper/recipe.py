"""timm's training recipe, beside the loop: the parts a config asks for, built with timm's own
constructors and called as timm's train.py calls them. The loop asks for `lr`, `mix`, `trains`,
`clip` and `update_ema`, and names none of the parts; `state` carries the EMA into latest.pth.

- optimizer `adamw`: `timm.optim.create_optimizer_v2` on the distiller (its trained parameters;
  no weight decay on norms, biases and the student's `no_weight_decay()`), `opt_eps`, `opt_betas`.
- `lr_schedule cosine`: `timm.scheduler.create_scheduler_v2` (CosineLRScheduler) with
  `lr_warmup_epochs`, `warmup_lr`, `min_lr`, per epoch or per update (`sched_on_updates`). It runs
  on an optimizer of its own, only to say the rate: epoch e (from 1) trains at its `step(e - 1)`,
  update n (from 0) at its `step_update(n)`, as timm's loop sets them; `step`: the CRD protocol.
- `mixup` / `cutmix`: timm's `Mixup` (with `label_smoothing`) on each training batch of the main
  training, before the distiller: student and teacher see the mixed images, the cross-entropy
  takes the soft targets (distillers.functional.task_loss); a final batch of odd size is dropped
  (Mixup pairs the images), as timm's loader drops it.
- `clip_grad`: `timm.utils.dispatch_clip_grad` (`clip_mode`) after the backward pass (after the
  fp16 scaler's unscale), on the main optimizer's parameters.
- `model_ema`: `timm.utils.ModelEmaV3` of the deployed model, updated after every step with the
  update count (timm's `step`: a first update copies the weights).
Every draw (Mixup's lambda and boxes from numpy) comes from the RNGs the loop seeds and saves, so a
resume stays bit for bit.
"""
import torch


def step_decay(cfg, epoch):
    """The CRD protocol's rate of epoch `epoch` (from 1): learning_rate * lr_decay_rate^k, k the
    decay epochs below it."""
    decays = sum(epoch > e for e in cfg.lr_decay_epochs)
    return cfg.learning_rate * cfg.lr_decay_rate ** decays


def timm_optimizer(cfg, distiller):
    """AdamW through timm's create_optimizer_v2, as timm's train.py builds it."""
    from timm.optim import create_optimizer_v2
    extra = {"eps": cfg.opt_eps, **({"betas": tuple(cfg.opt_betas)} if cfg.opt_betas else {})}
    return create_optimizer_v2(distiller, opt=cfg.optimizer, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                               **extra)


def cosine_scheduler(cfg, steps_per_epoch):
    """timm's cosine schedule of cfg, on an optimizer of its own (one parameter) that holds the rate."""
    from timm.scheduler import create_scheduler_v2
    holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.learning_rate)
    scheduler, _ = create_scheduler_v2(holder, sched="cosine", num_epochs=cfg.epochs, min_lr=cfg.min_lr,
                                       warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.lr_warmup_epochs,
                                       step_on_epochs=not cfg.sched_on_updates, updates_per_epoch=steps_per_epoch)
    return scheduler, holder


class Recipe:
    """The recipe parts of `cfg` for a run of `steps_per_epoch` steps an epoch over `num_classes`
    classes; `distiller` gives the EMA its deployed model."""

    def __init__(self, cfg, distiller, steps_per_epoch, num_classes=None):
        self.cfg, self.steps_per_epoch = cfg, steps_per_epoch
        self.scheduler = self.holder = None
        if cfg.lr_schedule == "cosine":
            self.scheduler, self.holder = cosine_scheduler(cfg, steps_per_epoch)
        self.mixup = None
        if cfg.mixup or cfg.cutmix:
            from timm.data import Mixup
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                               switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode,
                               label_smoothing=cfg.label_smoothing, num_classes=num_classes)
        self.ema, self.ema_best, self.ema_best_epoch = None, 0.0, 0
        if cfg.model_ema:
            from timm.utils import ModelEmaV3
            self.ema = ModelEmaV3(distiller.deployed, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup)

    @property
    def per_step(self):
        """Whether the rate changes at every step (not only at each epoch's start)."""
        return self.scheduler is not None and self.cfg.sched_on_updates

    def update_number(self, epoch, step):
        """The number of step `step` (from 1) of `epoch` (from 1) among all the run's, from 1."""
        return (epoch - 1) * self.steps_per_epoch + step

    def lr(self, epoch, step=1):
        """The learning rate of step `step` (from 1) of `epoch` (from 1)."""
        if self.scheduler is None:
            return step_decay(self.cfg, epoch)
        if self.cfg.sched_on_updates:
            self.scheduler.step_update(self.update_number(epoch, step) - 1)
        else:
            self.scheduler.step(epoch - 1)
        return self.holder.param_groups[0]["lr"]

    def mix(self, image, target):
        """(images, targets) of a training batch: Mixup/CutMix's and their soft targets, or as they are."""
        return self.mixup(image, target) if self.mixup is not None else (image, target)

    def trains(self, batch):
        """Whether a batch of this size can be trained (Mixup pairs its images)."""
        return self.mixup is None or batch % 2 == 0

    def clip(self, optimizer):
        if self.cfg.clip_grad:
            from timm.utils import dispatch_clip_grad
            dispatch_clip_grad([p for group in optimizer.param_groups for p in group["params"]],
                               self.cfg.clip_grad, mode=self.cfg.clip_mode)

    def update_ema(self, distiller, epoch, step):
        if self.ema is not None:
            self.ema.update(distiller.deployed, step=self.update_number(epoch, step))

    def state(self):
        if self.ema is None:
            return None
        return {"ema": self.ema.module.state_dict(), "ema_best": self.ema_best, "ema_best_epoch": self.ema_best_epoch}

    def load_state(self, state):
        if self.ema is not None and state:
            self.ema.module.load_state_dict(state["ema"])
            self.ema_best, self.ema_best_epoch = state["ema_best"], state["ema_best_epoch"]
