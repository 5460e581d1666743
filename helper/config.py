"""Every config key, its default and its meaning, in one place; loading, overriding, validating.

A run is `defaults <- YAML file <- KEY VALUE overrides`, validated, then frozen. The keys are
flat and carry the names of the paper's own YAML files, which load unchanged. Unknown keys are
errors that suggest the closest valid key; values are coerced to the default's type (PyYAML
reads the papers' `5e-4` as a string, and `'150,180,210'` is a list of epochs).
"""
import copy
import difflib
import json
import os
import warnings

import yaml
from yacs.config import CfgNode

from common.errors import UserError
from dataset.registry import NAMES as DATASETS

# (key, default, one-line meaning). The order is the order of `config.yaml` and of the README.
KEYS = [
    # -- the paper's keys: run and schedule
    ("print_freq", 100, "print a progress line every this many steps (when not on a TTY)"),
    ("save_freq", 40, "write ckpt_epoch_N.pth every this many epochs"),
    ("batch_size", 64, "training batch size of the whole run (all DDP ranks together)"),
    ("num_workers", 4, "data-loader worker processes (plain path)"),
    ("epochs", 240, "training epochs"),
    ("init_epochs", 30, "epochs of the init stage of FSP, AB and FT (only methods with an init stage use it)"),
    ("learning_rate", 0.05, "initial SGD learning rate (the paper: 0.01 for MobileNetV2/ShuffleV1/V2)"),
    ("lr_decay_epochs", [150, 180, 210], "epochs after which lr is multiplied by lr_decay_rate"),
    ("lr_decay_rate", 0.1, "step-decay factor"),
    ("weight_decay", 5e-4, "SGD weight decay"),
    ("momentum", 0.9, "SGD momentum"),
    ("dataset", "cifar100", "cifar100, cifar10 (downloaded when missing), tiny_imagenet, imagenet (put in "
                            "data_dir) or synthetic (generated): README, Data sets"),
    ("data_dir", "", "folder of the data set's files; empty: ./data/<dataset>"),
    ("save_folder", "", "run folder; empty: ./save/<teacher_model|student_model>/<derived name>"),
    # -- the paper's keys: models and method
    ("model", "", "architecture trained by train_teacher.py (a name of models.model_dict)"),
    ("model_s", "", "student architecture (train_student.py)"),
    ("model_t", "", "teacher architecture (train_student.py)"),
    ("path_t", "", "teacher checkpoint (train_student.py)"),
    ("distill", "kd", "method: kd hint attention similarity correlation rkd fsp crd ASKD (vanilla for teachers)"),
    ("gamma", 1.0, "weight of the cross-entropy loss"),
    ("alpha", 0.0, "weight of Hinton's KD loss"),
    ("beta", 0.0, "weight of the method's own loss"),
    ("kd_T", 4.0, "temperature of Hinton's KD loss"),
    ("hint_layer", 2, "FitNet: index of the feature hinted"),
    ("feat_dim", 128, "CRD/CC: embedding dimension"),
    ("mode", "exact", "CRD positive: exact (the sample itself) or relax (a same-class sample)"),
    ("nce_k", 16384, "CRD: negatives per sample"),
    ("nce_t", 0.07, "CRD: temperature"),
    ("nce_m", 0.5, "CRD: momentum of the memory update"),
    ("group", "res_last", "ASKD region loss on: res_last (feats[-2]), res_group (feats[1:-1]), target (feats[layer])"),
    ("r", 2, "ASKD: regions per side, at least 2 (clamped to the map size)"),
    ("w_rs", 5.0, "ASKD: weight of the region-structure loss"),
    ("w_cs", 14.0, "ASKD: weight of the class-structure loss"),
    ("layer", 2, "ASKD group target: index of the feature used"),
    # -- the other methods of the CRD repository and mdistiller
    ("warmup_epochs", 20, "DKD/ReviewKD: the method's loss ramps up as min(epoch / warmup_epochs, 1)"),
    ("dkd_alpha", 1.0, "DKD: weight of the target-class KL (TCKD)"),
    ("dkd_beta", 8.0, "DKD: weight of the non-target-class KL (NCKD)"),
    ("optimizer", "sgd", "sgd, or dot (DOT: separate momenta for the task and the distillation gradients)"),
    ("dot_delta", 0.075, "DOT: task momentum = momentum - dot_delta, distillation momentum = momentum + dot_delta"),
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
    ("fast", False, "fast path: device-resident data, batched augmentation"),
    ("amp", "off", "mixed precision: off, bf16 or fp16 (fp16 with a grad scaler)"),
    ("channels_last", False, "channels_last memory format for the models"),
    ("compile", False, "torch.compile the models (student and teacher), in place (state_dict keys unchanged)"),
    ("cuda_graph", False, "CUDA: capture the whole training step (forward, backward, SGD) as one CUDA "
                          "graph and replay it; needs fast true, amp off or bf16, one process"),
    ("sync_bn", False, "DDP on CUDA: convert BatchNorm to SyncBatchNorm"),
    ("tensorboard", True, "write tensorboard event files into the run folder"),
    ("eval_freq", 1, "evaluate every this many epochs (1: every epoch, the protocol); the last epoch always; "
                     "the best checkpoint only among evaluated epochs"),
]
DOC = {key: doc for key, _, doc in KEYS}
DEFAULTS = {key: default for key, default, _ in KEYS}
CHOICES = {
    "dataset": DATASETS,
    "mode": ("exact", "relax"),
    "group": ("res_last", "res_group", "target"),
    "amp": ("off", "bf16", "fp16"),
    "optimizer": ("sgd", "dot"),
}
# Keys that may differ between a run and its resumption without changing the result.
HARMLESS_ON_RESUME = ("print_freq", "num_workers", "epochs", "resume", "device", "save_freq",
                      "tensorboard", "download", "data_dir", "cuda_graph")
LOW_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


def get_cfg_defaults():
    """A fresh, mutable CfgNode holding every key at its default."""
    return CfgNode(copy.deepcopy(DEFAULTS))


def _suggest(key):
    close = difflib.get_close_matches(key, DOC, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_epochs(value):
    """'150,180,210', [150, 180, 210], 150 or '150' -> [150, 180, 210] / [150]."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        value = [value]
    elif isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    return [_as_int(v) for v in value]


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


def coerce(key, value):
    """`value` converted to the type of `key`'s default, or a UserError."""
    default = DEFAULTS[key]
    try:
        if key == "lr_decay_epochs":
            return parse_epochs(value)
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
        if isinstance(value, (list, dict)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        kind = "a list of epochs" if key == "lr_decay_epochs" else type(default).__name__
        raise UserError(f"config key '{key}' expects {kind}, got {value!r}") from None


def read_yaml(path):
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
    for key, value in items:
        if key not in DOC:
            raise UserError(f"unknown config key '{key}' in {origin}{_suggest(key)}")
        cfg[key] = coerce(key, value)


def parse_overrides(opts):
    """['epochs', '1', 'lr_decay_epochs', '150,180'] -> [(key, parsed value), ...]."""
    if len(opts) % 2:
        raise UserError(f"overrides come in KEY VALUE pairs; '{opts[-1]}' has no value")
    pairs = []
    for key, text in zip(opts[::2], opts[1::2]):
        if isinstance(DEFAULTS.get(key), str):
            pairs.append((key, text))  # text as typed: `amp off`, `trial 007`
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        pairs.append((key, text if value is None else value))
    return pairs


def validate(cfg, script):
    """Checks that need no model built; raises UserError on the first problem."""
    from distillers import distiller_names
    from models import model_dict

    for key in ("learning_rate", "batch_size", "epochs", "kd_T", "nce_t", "save_freq", "print_freq", "eval_freq",
                "feat_dim", "nce_k", "synthetic_train_size", "synthetic_test_size"):
        if cfg[key] <= 0:
            raise UserError(f"'{key}' must be positive, got {cfg[key]}")
    for key in ("num_workers", "init_epochs", "weight_decay", "momentum", "lr_decay_rate",
                "gamma", "alpha", "beta", "w_rs", "w_cs", "synthetic_noise", "warmup_epochs", "dkd_alpha",
                "dkd_beta"):
        if cfg[key] < 0:
            raise UserError(f"'{key}' must not be negative, got {cfg[key]}")
    if not 0 <= cfg.nce_m < 1:
        raise UserError(f"'nce_m' must be in [0, 1), got {cfg.nce_m}")
    if cfg.r < 2:
        raise UserError(f"'r' must be at least 2 (ASKD's regions per side: one region has no "
                        f"structure to compare), got {cfg.r}")
    epochs = cfg.lr_decay_epochs
    if any(b <= a for a, b in zip(epochs, epochs[1:])) or any(e < 1 for e in epochs):
        raise UserError(f"'lr_decay_epochs' must be positive and increasing, got {epochs}")
    if epochs and epochs[-1] > cfg.epochs:
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
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise UserError(f"'device' must be auto, cpu, cuda or cuda:N, got '{cfg.device}'")
    model_keys = ("model",) if script == "teacher" else ("model_s", "model_t")
    for key in model_keys:
        if not cfg[key]:
            raise UserError(f"config key '{key}' is required: the name of a model in models.model_dict")
        if cfg[key] not in model_dict:
            raise UserError(f"unknown model '{cfg[key]}' for '{key}'{_closest(cfg[key], model_dict)}; "
                            f"valid: {', '.join(model_dict)}")
    if script == "student":
        if cfg.distill not in distiller_names():
            raise UserError(f"unknown method '{cfg.distill}'{_closest(cfg.distill, distiller_names())}; "
                            f"valid: {', '.join(distiller_names())}")
        if not cfg.path_t:
            raise UserError("config key 'path_t' is required: the teacher checkpoint "
                            "(python fetch_teachers.py downloads the paper's teachers)")
    trained = cfg.model if script == "teacher" else cfg.model_s
    if trained in LOW_LR_MODELS and cfg.dataset == "cifar100" and cfg.learning_rate != 0.01:
        warnings.warn(f"{trained} is trained at learning_rate 0.01 in the paper's protocol; "
                      f"this run uses {cfg.learning_rate}", stacklevel=2)


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
    if not 0 <= cfg.dot_delta <= cfg.momentum < 1 - cfg.dot_delta:
        raise UserError(f"optimizer dot needs 0 <= dot_delta <= momentum < 1 - dot_delta (momenta "
                        f"momentum -/+ dot_delta in [0, 1)), got momentum {cfg.momentum}, "
                        f"dot_delta {cfg.dot_delta}")


def _closest(name, names):
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.4)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_config(path, overrides=(), script="teacher"):
    """defaults <- YAML at `path` <- KEY VALUE `overrides`, validated and frozen."""
    cfg = get_cfg_defaults()
    merge(cfg, read_yaml(path).items(), path)
    merge(cfg, parse_overrides(list(overrides)), "the command line")
    if script == "teacher":
        cfg.distill = "vanilla"  # a model trained alone: plain cross-entropy
    validate(cfg, script)
    cfg.freeze()
    return cfg


def to_dict(cfg):
    return {key: (list(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key]) for key, _, _ in KEYS}


def dump(cfg):
    """The effective config as YAML, one documented key a line."""
    lines = []
    for key, value in to_dict(cfg).items():
        lines.append(f"{key}: {json.dumps(value)}  # {DOC[key]}")  # JSON values are valid YAML
    return "\n".join(lines) + "\n"


def resume_differences(saved, cfg):
    """Keys whose saved value differs from `cfg` in a way that changes the result."""
    current = to_dict(cfg)
    diffs = []
    for key, value in current.items():
        if key in HARMLESS_ON_RESUME and key != "epochs":
            continue
        old = saved.get(key)
        if key == "epochs" and old is not None and value >= old:
            continue
        if old != value:
            diffs.append(f"{key}: {old!r} -> {value!r}")
    return diffs
