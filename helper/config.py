"""The keys every run shares, their defaults and meanings; loading, overriding, validating.

A run is `defaults <- YAML file <- KEY VALUE overrides`, validated, then frozen. The keys are
flat and carry the names of the paper's own YAML files, which load unchanged. The common keys
are `KEYS`; a method's own keys (its "knobs": `Knob` in common/knobs.py) are declared on its
class and accepted when that method is selected. Unknown keys are errors that suggest the
closest valid key (and name the method a knob belongs to); values are coerced to the default's
type (PyYAML reads the papers' `5e-4` as a string, and `'150,180,210'` is a list of epochs).

`distill`, the model keys and `dataset` may name code outside this repository
(common/resolve.py); the loaded file and its sha256 are recorded in `plugins`, so that
`config.yaml` says what ran and a resume refuses when that code changed.
"""
import copy
import difflib
import json
import os
import warnings

import yaml
from yacs.config import CfgNode

from common.errors import UserError
from common.knobs import declared_knobs
from common.resolve import add_plugin_paths

# (key, default, one-line meaning). The order is the order of `config.yaml` and of docs/config.md.
KEYS = [
    # -- the paper's keys: run and schedule
    ("print_freq", 100, "print a progress line every this many steps (when not on a TTY)"),
    ("save_freq", 40, "write ckpt_epoch_N.pth every this many epochs"),
    ("batch_size", 64, "training batch size of the whole run (all DDP ranks together)"),
    ("num_workers", 4, "data-loader worker processes (plain path)"),
    ("num_threads", 0, "torch's CPU threads; 0: OMP_NUM_THREADS when set, else on the CPU the cores less one "
                       "per loader worker (at least 1), beside a GPU torch's default"),
    ("epochs", 240, "training epochs"),
    ("init_epochs", 30, "epochs of the init stage of FSP, AB and FT (only methods with an init stage use it)"),
    ("learning_rate", 0.05, "initial SGD learning rate (the paper: 0.01 for MobileNetV2/ShuffleV1/V2)"),
    ("lr_decay_epochs", [150, 180, 210], "epochs after which lr is multiplied by lr_decay_rate"),
    ("lr_decay_rate", 0.1, "step-decay factor"),
    ("weight_decay", 5e-4, "SGD weight decay"),
    ("momentum", 0.9, "SGD momentum"),
    ("dataset", "cifar100", "cifar100, cifar10 (downloaded when missing), tiny_imagenet, imagenet, imagefolder "
                            "(put in data_dir), synthetic (generated), or a plugin: docs/datasets.md"),
    ("data_dir", "", "folder of the data set's files; empty: ./data/<dataset>"),
    ("save_folder", "", "run folder; empty: ./save/<teacher_model|student_model>/<derived name>"),
    # -- the paper's keys: models and method
    ("model", "", "architecture trained by train_teacher.py: a name of models.model_dict, torchvision:NAME, timm:NAME, or a plugin"),
    ("model_s", "", "student architecture (train_student.py)"),
    ("model_t", "", "teacher architecture (train_student.py)"),
    ("path_t", "", "teacher checkpoint (train_student.py): a file, or torchvision:WEIGHTS / timm:TAG for a library "
                   "model's own pretrained weights, from the library's local cache"),
    ("model_kwargs", {}, "extra constructor arguments of model, e.g. {patch_size: 4} for a timm ViT"),
    ("model_s_kwargs", {}, "extra constructor arguments of model_s"),
    ("model_t_kwargs", {}, "extra constructor arguments of model_t"),
    ("teacher_input_size", 0, "train_student.py: resize the images (on the device, bilinear) to this side before "
                              "the teacher, e.g. 224 for an ImageNet-sized ViT teacher over 32-pixel CIFAR; 0: as "
                              "they are"),
    ("distill", "kd", "method: a name of docs/methods.md, or a plugin (vanilla for teachers)"),
    ("gamma", 1.0, "weight of the cross-entropy loss"),
    ("alpha", 0.0, "weight of Hinton's KD loss"),
    ("beta", 0.0, "weight of the method's own loss"),
    ("kd_T", 4.0, "temperature of Hinton's KD loss"),
    # -- the optimizer (any method)
    ("optimizer", "sgd", "sgd; adamw (timm's create_optimizer_v2: no weight decay on norms, biases and the "
                         "model's no_weight_decay, a ViT's position embedding and class token); or dot (DOT: "
                         "separate momenta for the task and the distillation gradients)"),
    ("dot_delta", 0.075, "DOT: task momentum = momentum - dot_delta, distillation momentum = momentum + dot_delta"),
    ("opt_eps", 1e-8, "adamw: its eps"),
    ("opt_betas", [], "adamw: its betas, e.g. 0.9,0.999; empty: the optimizer's"),
    # -- timm's training recipe (docs/recipes.md); the defaults are the CRD protocol
    ("lr_schedule", "step", "step: lr_decay_rate at each of lr_decay_epochs (the CRD protocol); cosine: timm's "
                            "CosineLRScheduler (create_scheduler_v2) from learning_rate to min_lr over the epochs"),
    ("lr_warmup_epochs", 0, "cosine: epochs of linear warm-up from warmup_lr (timm's warmup_epochs)"),
    ("warmup_lr", 1e-5, "cosine: the learning rate the warm-up starts from"),
    ("min_lr", 0.0, "cosine: the learning rate it ends at"),
    ("sched_on_updates", False, "cosine: move the schedule at every optimizer step instead of every epoch"),
    ("label_smoothing", 0.0, "the cross-entropy's label smoothing (timm's LabelSmoothingCrossEntropy; with "
                             "Mixup or CutMix, in their soft targets)"),
    ("mixup", 0.0, "Mixup's alpha (timm's Mixup; the teacher sees the mixed images too); 0: off"),
    ("cutmix", 0.0, "CutMix's alpha; 0: off"),
    ("mixup_prob", 1.0, "Mixup/CutMix: the probability that a batch is mixed"),
    ("mixup_switch_prob", 0.5, "Mixup/CutMix: the probability of CutMix when both are on"),
    ("mixup_mode", "batch", "Mixup/CutMix: batch, pair or elem (one mix per batch, pair of images, image)"),
    ("transform", "crd", "crd: the data set's own transforms (CIFAR: crop and flip); timm: timm's "
                         "create_transform at input_size with the keys below"),
    ("input_size", 0, "transform timm: side of the training crop and of the test image; 0: the data set's"),
    ("auto_augment", "", "transform timm: timm's augmentation string, e.g. rand-m9-mstd0.5-inc1; empty: none"),
    ("color_jitter", 0.4, "transform timm: colour jitter strength (timm leaves it out under auto_augment)"),
    ("reprob", 0.0, "transform timm: random erasing probability"),
    ("remode", "pixel", "transform timm: random erasing fill, const, rand or pixel"),
    ("crop_pct", 0.875, "transform timm: the test image is resized to input_size / crop_pct, then centre-cropped"),
    ("train_interpolation", "random", "transform timm: the training crop's resize, bilinear, bicubic or random"),
    ("interpolation", "bicubic", "transform timm: the test resize, bilinear or bicubic"),
    ("clip_grad", 0.0, "clip the gradients at this value (timm's dispatch_clip_grad); 0: off"),
    ("clip_mode", "norm", "clip_grad: norm, value or agc"),
    ("model_ema", False, "keep timm's ModelEmaV3 of the deployed model's weights: evaluated each epoch beside "
                         "the model, saved as <model>_ema_best.pth and <model>_ema_last.pth"),
    ("model_ema_decay", 0.9998, "model_ema: the decay of the average"),
    ("model_ema_warmup", False, "model_ema: timm's decay warm-up (the decay grows with the steps)"),
    # -- ours
    ("trial", "", "run name appended to save_folder as trial_<trial> (a new trial never overwrites)"),
    ("seed", 0, "seed of every RNG (weights, data order, augmentation, CRD sampling)"),
    ("device", "auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"),
    ("resume", False, "continue from latest.pth of the run folder (also automatic when the config matches)"),
    ("download", True, "download CIFAR-100 / CIFAR-10 when missing from data_dir"),
    ("synthetic_train_size", 5000, "dataset synthetic: training images"),
    ("synthetic_test_size", 1000, "dataset synthetic: test images"),
    ("synthetic_noise", 1.0, "dataset synthetic: noise level (higher is harder)"),
    ("synthetic_seed", 0, "dataset synthetic: seed of the generated images (independent of seed)"),
    ("imagefolder_size", 224, "dataset imagefolder: side of the training crop and of the test's centre crop"),
    ("imagefolder_mean", [0.485, 0.456, 0.406], "dataset imagefolder: per-channel mean of the normalisation"),
    ("imagefolder_std", [0.229, 0.224, 0.225], "dataset imagefolder: per-channel std of the normalisation"),
    ("fast", False, "fast path: device-resident data, batched augmentation"),
    ("amp", "off", "mixed precision: off, bf16 or fp16 (fp16 with a grad scaler)"),
    ("channels_last", False, "channels_last memory format for the models"),
    ("compile", False, "torch.compile the models (student and teacher), in place (state_dict keys unchanged)"),
    ("cuda_graph", False, "CUDA: capture the whole training step (forward, backward, SGD) as one CUDA "
                          "graph and replay it; needs fast true, amp off or bf16, one process"),
    ("teacher_cache", "off", "train_student.py on the fast path: off, auto (./save/teacher_cache) or a folder "
                             "where the teacher's logits (and pooled embedding) of every crop and flip of every "
                             "training image are built once and read instead of running the teacher; for the "
                             "methods that read nothing else of it (docs/speed.md)"),
    ("sync_bn", False, "DDP on CUDA: convert BatchNorm to SyncBatchNorm"),
    ("ddp_init_timeout", 300, "DDP: seconds a process waits for its process group to form (at a torchrun restart "
                              "too) before it exits with an error, so that torchrun's next restart proceeds"),
    ("tensorboard", True, "write tensorboard event files into the run folder"),
    ("val_split", 0.0, "hold out this seeded, class-stratified fraction of the training set (test transform) and "
                       "choose the best checkpoint on it instead of the test set; 0: the papers' protocol"),
    ("eval_freq", 1, "evaluate every this many epochs (1: every epoch, the protocol); the last epoch always; "
                     "the best checkpoint only among evaluated epochs"),
    # -- plugins: code outside this repository (docs/extending.md)
    ("plugin_path", "", "folders (comma-separated) searched first for PACKAGE.MODULE:NAME plugins; the "
                        "working directory always is"),
    ("plugins", {}, "written by the loader, not a setting: the source file and sha256 of each plugin the run "
                    "loaded, by the key that named it"),
]
DOC = {key: doc for key, _, doc in KEYS}
DEFAULTS = {key: default for key, default, _ in KEYS}
CHOICES = {
    "amp": ("off", "bf16", "fp16"),
    "optimizer": ("sgd", "adamw", "dot"),
    "lr_schedule": ("step", "cosine"),
    "mixup_mode": ("batch", "pair", "elem"),
    "transform": ("crd", "timm"),
    "remode": ("const", "rand", "pixel"),
    "train_interpolation": ("bilinear", "bicubic", "random"),
    "interpolation": ("bilinear", "bicubic"),
    "clip_mode": ("norm", "value", "agc"),
}
# Keys that may differ between a run and its resumption without changing the result.
HARMLESS_ON_RESUME = ("print_freq", "num_workers", "num_threads", "epochs", "resume", "device", "save_freq",
                      "tensorboard", "download", "data_dir", "cuda_graph", "plugin_path", "teacher_cache",
                      "ddp_init_timeout")
RECORDED = "plugins"  # set by the loader only
LOW_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


def get_cfg_defaults(distill=None):
    """A fresh, mutable CfgNode holding every common key at its default, and the knobs of the
    method `distill` at theirs when it is given."""
    cfg = CfgNode(copy.deepcopy(DEFAULTS))
    if distill is not None:
        cfg.distill = distill
        for knob in method_knobs(distill).values():
            cfg[knob.name] = copy.deepcopy(knob.default)
    return cfg


def method_knobs(distill):
    """{name: Knob} of the method `distill` (built-in or plugin)."""
    from distillers import method_class
    return declared_knobs(method_class(distill)[0])


def _suggest(key, valid):
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _owner_hint(key, distill):
    """': it is a knob of crd, not of kd ...' when `key` belongs to other built-in methods."""
    from distillers import builtin_knob_owners
    owners = [name for name, _ in builtin_knob_owners().get(key, ())]
    if not owners:
        return ""
    return f": it is a knob of {', '.join(owners)}, not of {distill}: remove it, or select its method"


def _items(value):
    """'1,2,3', [1, 2, 3], 1 or '1' -> the items as a list (ValueError for a boolean anywhere)."""
    if isinstance(value, (int, float)):
        value = [value]
    elif isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, bool) or any(isinstance(v, bool) for v in value):
        raise ValueError
    return list(value)


def parse_epochs(value):
    """'150,180,210', [150, 180, 210], 150 or '150' -> [150, 180, 210] / [150]."""
    return [_as_int(v) for v in _items(value)]


def parse_numbers(value):
    """'0.5,0.5,0.5', [0.5, 0.5, 0.5] or 0.5 -> a list of floats."""
    return [float(v) for v in _items(value)]


def _as_int(value):
    if isinstance(value, bool):
        raise ValueError
    number = float(value)
    if number != int(number):
        raise ValueError
    return int(number)


def _as_bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError


def coerce(key, value, default):
    """`value` converted to the type of `default` (`key`'s), or a UserError."""
    try:
        if key == "lr_decay_epochs":
            return parse_epochs(value)
        if isinstance(default, list):
            return parse_numbers(value)
        if isinstance(default, bool):
            return _as_bool(value)
        if isinstance(default, int):
            return _as_int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on (no/yes) as a boolean
            return "on" if value else "off"
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if isinstance(value, (list, dict)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        kind = ("a list of epochs" if key == "lr_decay_epochs" else "a list of numbers" if isinstance(default, list)
                else "a mapping, e.g. {patch_size: 4}" if isinstance(default, dict) else type(default).__name__)
        raise UserError(f"config key '{key}' expects {kind}, got {value!r}") from None


BASE = "base"  # a config file's key: the file(s) whose keys it starts from, its own keys over them


def read_yaml(path, _within=()):
    """The keys of a YAML config file, those of its `base` file(s) first (paths relative to the
    file; a base may have a base): `base: ../recipes/vit_mlp.yaml` puts a training recipe under
    a method's config."""
    data = _read_one(path)
    bases = data.pop(BASE, None)
    if bases is None:
        return data
    merged = {}
    for base in [bases] if isinstance(bases, str) else bases:
        full = os.path.normpath(os.path.join(os.path.dirname(path), str(base)))
        if full in _within or full == os.path.normpath(path):
            raise UserError(f"config {path} takes {base} as its base, which takes it back: a cycle of base files")
        if not os.path.isfile(full):
            raise UserError(f"config {path}: its base {base} ({full}) is not a file")
        merged.update(read_yaml(full, _within + (os.path.normpath(path),)))
    return {**merged, **data}


def _read_one(path):
    if not os.path.exists(path):
        raise UserError(f"config file not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"config path is a directory, expected a YAML file: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark, opened = e.problem_mark, e.context_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        context = f" ({e.context} at line {opened.line + 1})" if opened else ""
        raise UserError(f"YAML syntax error in {path}:{line} {e.problem}{context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    if data is None:
        raise UserError(f"config file is empty: {path}")
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of 'key: value' lines")
    return data


def merge(cfg, items, origin):
    """Set each (key, value) of `items` on `cfg`, whose keys (common keys and the method's
    knobs, at their defaults) are the valid ones. A value from the command line is a `Text`,
    read as YAML unless the key's default is a string."""
    for key, value in items:
        if key == RECORDED:
            raise UserError(f"'{RECORDED}' in {origin} is written by the loader, not a setting: remove it")
        if key not in cfg:
            hint = _owner_hint(key, cfg.distill) or _suggest(key, cfg)
            raise UserError(f"unknown config key '{key}' in {origin}{hint}")
        if isinstance(value, Text):
            value = value.read(cfg[key])
        cfg[key] = coerce(key, value, cfg[key])


class Text(str):
    """A value typed on the command line: `read(default)` is the text itself for a string key
    (`amp off`, `trial 007`), else the text read as YAML."""

    def read(self, default):
        if isinstance(default, str):
            return str(self)
        try:
            value = yaml.safe_load(self)
        except yaml.YAMLError:
            return str(self)
        return str(self) if value is None else value


def parse_overrides(opts):
    """['epochs', '1', 'lr_decay_epochs', '150,180'] -> [(key, Text), ...]."""
    if len(opts) % 2:
        raise UserError(f"overrides come in KEY VALUE pairs; '{opts[-1]}' has no value")
    return [(key, Text(text)) for key, text in zip(opts[::2], opts[1::2])]


def validate(cfg, script, knobs=None):
    """Checks that need no model built; raises UserError on the first problem. `knobs`: the
    method's {name: Knob} (default: looked up from cfg.distill)."""
    for key in ("learning_rate", "batch_size", "epochs", "kd_T", "save_freq", "print_freq", "eval_freq",
                "synthetic_train_size", "synthetic_test_size", "ddp_init_timeout"):
        if cfg[key] <= 0:
            raise UserError(f"'{key}' must be positive, got {cfg[key]}")
    for key in ("num_workers", "num_threads", "init_epochs", "weight_decay", "momentum", "lr_decay_rate",
                "gamma", "alpha", "beta", "synthetic_noise", "teacher_input_size", "lr_warmup_epochs", "warmup_lr",
                "min_lr", "mixup", "cutmix", "input_size", "reprob", "clip_grad"):
        if cfg[key] < 0:
            raise UserError(f"'{key}' must not be negative, got {cfg[key]}")
    if not 0 <= cfg.val_split < 1:
        raise UserError(f"'val_split' is the fraction of the training set held out: 0 (none) up to below 1, "
                        f"got {cfg.val_split}")
    for knob in (method_knobs(cfg.distill) if knobs is None else knobs).values():
        knob.check(cfg[knob.name], cfg.distill)
    epochs = cfg.lr_decay_epochs
    if any(b <= a for a, b in zip(epochs, epochs[1:])) or any(e < 1 for e in epochs):
        raise UserError(f"'lr_decay_epochs' must be positive and increasing, got {epochs}")
    if cfg.lr_schedule == "step" and epochs and epochs[-1] > cfg.epochs:
        raise UserError(f"lr decay epoch {epochs[-1]} is beyond epochs={cfg.epochs}; "
                        f"set lr_decay_epochs (e.g. lr_decay_epochs {max(1, cfg.epochs // 2)})")
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise UserError(f"'{key}' must be one of {', '.join(allowed)}, got '{cfg[key]}'")
    if cfg.cuda_graph and not cfg.fast:
        raise UserError("cuda_graph needs fast true (the graph replays one batch shape; the fast "
                        "path drops the last partial batch): set fast true")
    if cfg.cuda_graph and cfg.amp == "fp16":
        raise UserError("cuda_graph cannot replay fp16's grad scaler (it reads the GPU every step): "
                        "use amp bf16 or off")
    if cfg.optimizer == "dot":
        _check_dot(cfg, script)
    _check_recipe(cfg)
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise UserError(f"'device' must be auto, cpu, cuda or cuda:N, got '{cfg.device}'")
    for key in model_keys(script):
        if not cfg[key]:
            raise UserError(f"config key '{key}' is required: the name of a model in models.model_dict")
    if script == "student":
        if not cfg.path_t:
            raise UserError("config key 'path_t' is required: the teacher checkpoint "
                            "(python fetch_teachers.py downloads the paper's teachers)")
    trained = cfg.model if script == "teacher" else cfg.model_s
    if trained in LOW_LR_MODELS and cfg.dataset == "cifar100" and cfg.learning_rate != 0.01:
        warnings.warn(f"{trained} is trained at learning_rate 0.01 in the paper's protocol; "
                      f"this run uses {cfg.learning_rate}", stacklevel=2)


def _check_recipe(cfg):
    """The recipe keys (helper/recipe.py, dataset/timm_transform.py): values timm refuses, and keys that
    would do nothing in this config."""
    ranges = {"label_smoothing": (0 <= cfg.label_smoothing < 1, "in [0, 1)"),
              "mixup_prob": (0 <= cfg.mixup_prob <= 1, "in [0, 1]"),
              "mixup_switch_prob": (0 <= cfg.mixup_switch_prob <= 1, "in [0, 1]"),
              "model_ema_decay": (0 < cfg.model_ema_decay < 1, "in (0, 1)")}
    for key, (holds, text) in ranges.items():
        if not holds:
            raise UserError(f"'{key}' must be {text}, got {cfg[key]}")
    if cfg.opt_eps <= 0:
        raise UserError(f"'opt_eps' must be positive, got {cfg.opt_eps}")
    if cfg.opt_betas and (len(cfg.opt_betas) != 2 or not all(0 <= b < 1 for b in cfg.opt_betas)):
        raise UserError(f"'opt_betas' takes two values in [0, 1), e.g. 0.9,0.999, got {cfg.opt_betas}")
    if cfg.lr_schedule == "step" and (cfg.lr_warmup_epochs or cfg.sched_on_updates):
        raise UserError("lr_warmup_epochs and sched_on_updates are the cosine schedule's: set lr_schedule cosine")
    if cfg.lr_schedule == "cosine" and cfg.lr_warmup_epochs >= cfg.epochs:
        raise UserError(f"a warm-up of {cfg.lr_warmup_epochs} epochs leaves nothing of the {cfg.epochs} epochs' "
                        f"cosine: set lr_warmup_epochs below epochs")
    if cfg.lr_schedule == "cosine" and cfg.min_lr > cfg.learning_rate:
        raise UserError(f"min_lr {cfg.min_lr} is above learning_rate {cfg.learning_rate}: the cosine would climb")
    timm_keys = [key for key in ("input_size", "auto_augment", "reprob") if cfg[key]]
    if cfg.transform == "crd" and timm_keys:
        raise UserError(f"{', '.join(timm_keys)} shape timm's transforms: set transform timm (or remove them)")
    if cfg.transform == "timm":
        from dataset.timm_transform import check_augment
        check_augment(cfg.auto_augment)
    if (cfg.mixup or cfg.cutmix) and cfg.batch_size % 2:
        raise UserError(f"Mixup and CutMix pair the images of a batch, so batch_size must be even, got "
                        f"{cfg.batch_size}")
    if cfg.clip_grad and cfg.optimizer == "dot":
        raise UserError("clip_grad with optimizer dot: DOT keeps the task and distillation gradients apart, "
                        "which one clip of their sum does not: remove clip_grad or set optimizer sgd")
    if cfg.cuda_graph and (cfg.clip_grad or cfg.optimizer == "adamw"):
        raise UserError("cuda_graph captures SGD's step alone (its rate a device tensor): set cuda_graph false "
                        "with clip_grad or optimizer adamw")
    if cfg.transform == "timm" and cfg.fast:
        raise UserError("the fast path crops and flips on the device and cannot make timm's transforms: set fast "
                        "false with transform timm")


def _check_dot(cfg, script):
    """DOT's step is two backward passes and its own update (helper/dot.py): what cannot carry it."""
    if script == "teacher":
        raise UserError("optimizer dot splits the task and the distillation gradients, and a teacher "
                        "has no distillation loss: set optimizer sgd")
    if cfg.cuda_graph:
        raise UserError("optimizer dot cannot be captured by cuda_graph (two backward passes, its own "
                        "update): set cuda_graph false or optimizer sgd")
    if cfg.amp == "fp16":
        raise UserError("optimizer dot does not take fp16's grad scaler: use amp bf16 or off")
    # dot_delta = momentum (a task momentum of 0) is refused: mdistiller then keeps no task buffer, so
    # a parameter with a task gradient alone takes no momentum, which this DOT does not reproduce
    if not 0 <= cfg.dot_delta < cfg.momentum < 1 - cfg.dot_delta:
        raise UserError(f"optimizer dot needs 0 <= dot_delta < momentum < 1 - dot_delta (momenta "
                        f"momentum -/+ dot_delta in (0, 1)), got momentum {cfg.momentum}, "
                        f"dot_delta {cfg.dot_delta}")


def model_keys(script):
    return ("model",) if script == "teacher" else ("model_s", "model_t")


def resolve_names(cfg, script):
    """Resolve the method, the models and the data set of `cfg` (built-in names or plugins:
    a one-line UserError when one cannot be had); {key: origin} of the plugins among them."""
    from dataset.registry import spec_entry
    from distillers import method_class
    from models import model_entry
    add_plugin_paths(cfg.plugin_path)
    origins = {"distill": method_class(cfg.distill)[1], "dataset": spec_entry(cfg.dataset)[1]}
    for key in model_keys(script):
        if cfg[key]:
            origins[key] = model_entry(cfg[key], key)[1]
    return {key: origin for key, origin in origins.items() if origin is not None}


def _own_knobs(cfg, items, path):
    """The items of a file that are not another built-in method's knobs; those are dropped with
    a warning (a file written for one method, run with `distill` set to another on the command
    line). On the command line such a key is an error: typed for this run, it would do nothing."""
    from distillers import builtin_knob_owners
    owners = builtin_knob_owners()
    foreign = [k for k, _ in items if k not in cfg and k in owners]
    if foreign:
        methods = sorted({name for k in foreign for name, _ in owners[k]})
        warnings.warn(f"{path} sets {', '.join(foreign)}, knobs of {', '.join(methods)}, not of {cfg.distill}: "
                      f"ignored", stacklevel=3)
    return [(k, v) for k, v in items if k not in foreign]


def load_config(path, overrides=(), script="teacher"):
    """defaults <- YAML at `path` <- KEY VALUE `overrides`, validated and frozen. The common
    keys are read first: they name the method, whose knobs are then accepted too."""
    # a run's config.yaml used as a config: its record of the plugins is made anew
    items = [(k, v) for k, v in read_yaml(path).items() if k != RECORDED]
    pairs = parse_overrides(list(overrides))
    cfg = get_cfg_defaults()
    merge(cfg, [(k, v) for k, v in items if k in DOC], path)
    merge(cfg, [(k, v) for k, v in pairs if k in DOC], "the command line")
    if script == "teacher":
        cfg.distill = "vanilla"  # a model trained alone: plain cross-entropy
    origins = resolve_names(cfg, script)
    knobs = method_knobs(cfg.distill)
    for knob in knobs.values():
        if knob.name in DOC:
            raise UserError(f"method '{cfg.distill}' declares the knob '{knob.name}', which is a common "
                            f"config key: rename it")
        cfg[knob.name] = copy.deepcopy(knob.default)
    merge(cfg, _own_knobs(cfg, [(k, v) for k, v in items if k not in DOC], path), path)
    merge(cfg, [(k, v) for k, v in pairs if k not in DOC], "the command line")
    validate(cfg, script, knobs)
    cfg.plugins = CfgNode(origins)
    cfg.freeze()
    return cfg


def to_dict(cfg):
    """The config as plain values: the common keys in the order of KEYS, then the method's knobs."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if isinstance(value, (list, tuple)) else value
    return {key: plain(value) for key, value in cfg.items()}


def docs(cfg):
    """{key: meaning} of every key of `cfg`: the common keys' and the method's knobs'."""
    return {**DOC, **{name: knob.doc for name, knob in method_knobs(cfg.distill).items()}}


def dump(cfg):
    """The effective config as YAML, one documented key a line."""
    meaning = docs(cfg)
    lines = []
    for key, value in to_dict(cfg).items():
        lines.append(f"{key}: {yaml_value(value)}  # {meaning[key]}")
    return "\n".join(lines) + "\n"


def yaml_value(value):
    """`value` as JSON (valid YAML) that YAML reads back as it was: a float's exponent gets a mantissa
    with a point (YAML 1.1 reads 1e-05 as a string, 1.0e-05 as a float)."""
    if isinstance(value, float):
        text = json.dumps(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return json.dumps(value)


def resume_differences(saved, cfg):
    """Keys whose saved value differs from `cfg` in a way that changes the result. A key the
    saved config lacks (a run of an older version) counts as at its default."""
    current = to_dict(cfg)
    defaults = to_dict(get_cfg_defaults(cfg.distill))
    diffs = []
    for key, value in current.items():
        if key in HARMLESS_ON_RESUME and key != "epochs":
            continue
        old = saved.get(key, defaults[key])
        if key == "epochs" and old is not None and value >= old:
            continue
        if key == RECORDED:
            diffs += _changed_sources(old or {}, value)
        elif old != value:
            diffs.append(f"{key}: {old!r} -> {value!r}")
    return diffs


def _changed_sources(old, new):
    """What differs between two `plugins` records, one short line per key."""
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before and after and before["import"] == after["import"]:
            lines.append(f"the source of {key} {after['import']} ({after['file']}) changed since the run "
                         f"started (sha256 {before['sha256'][:12]} -> {after['sha256'][:12]})")
        else:
            describe = lambda entry: entry["import"] if entry else "built-in"  # noqa: E731
            lines.append(f"{key}: {describe(before)} -> {describe(after)}")
    return lines
