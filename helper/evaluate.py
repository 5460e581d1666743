"""Scoring a checkpoint on the test split of a data set: top-1, top-5 and mean cross-entropy.

Any checkpoint this project writes (`<model>_best.pth`, `<model>_last.pth`, `ckpt_epoch_N.pth`,
`latest.pth`), the CRD repository's and mdistiller's released teachers, torchvision's weights
(a bare state dict): `checkpoint_weights` finds the model's state dict in each.

The config is the defaults <- `cfg_path` (else the run's `config.yaml` beside the checkpoint,
when there is one) <- KEY VALUE overrides <- `model` / `dataset`. The architecture is `model`,
else the config's `model` (a teacher run) or `model_s` (a student run), else the one model of
the zoo whose keys and shapes the weights have. The data set is `dataset` or the config's,
else the one (non-synthetic) set with as many classes as the checkpoint's classifier.
"""
import os

import dataset
from common.errors import UserError
from common.resolve import add_plugin_paths
from models import build_model, get_model

from .checkpoint import identify_architecture, load_checkpoint, load_weights, model_state_dict
from .config import DOC, RECORDED, get_cfg_defaults, merge, parse_overrides, read_yaml
from .threads import set_threads
from .trainer import diverged_score, evaluate, pick_device

RUN_CONFIG = "config.yaml"


def checkpoint_weights(obj, path, ema=False):
    """The model's state dict in a loaded checkpoint; `latest.pth` holds it as the distiller's
    `student.` entries, and with `ema` its EMA weights (model_ema) as they are."""
    if ema:
        kept = obj.get("recipe") if isinstance(obj, dict) else None
        if not kept or "ema" not in kept:
            raise UserError(f"{path} holds no EMA weights: --ema reads a latest.pth of a run with model_ema true "
                            f"(its <model>_ema_best.pth and _ema_last.pth are scored as they are, without --ema)")
        return model_state_dict(kept["ema"], path)
    if isinstance(obj, dict) and isinstance(obj.get("distiller"), dict):
        obj = {k[len("student."):]: v for k, v in obj["distiller"].items() if k.startswith("student.")}
    return model_state_dict(obj, path)


def data_config(dataset_name, data_dir=""):
    """A config that reads the test split of `dataset_name` from `data_dir` (empty: its default)."""
    cfg = get_cfg_defaults()
    merge(cfg, [("dataset", dataset_name), ("data_dir", data_dir)], "the arguments")
    return cfg


def score(model, cfg, device, batch_size=256, num_workers=0):
    """{top1, top5, loss, images} of `model` on the test split of cfg's data set (prepared first:
    downloaded when the set allows and `download` is on; a UserError when it is missing)."""
    dataset.prepare_data(cfg)
    loader = dataset.build_test_loader(cfg, batch_size=batch_size, num_workers=num_workers)
    return {**evaluate(model.to(device), loader, device), "images": len(loader.dataset)}


def run_config(checkpoint, cfg_path=None, overrides=(), model=None, dataset_name=None):
    """(config, model name or None, whether the data set was given, the config file or None)
    for `checkpoint`."""
    cfg = get_cfg_defaults()
    if cfg_path is None and os.path.isfile(os.path.join(os.path.dirname(checkpoint), RUN_CONFIG)):
        cfg_path = os.path.join(os.path.dirname(checkpoint), RUN_CONFIG)
    if cfg_path is not None:  # a method's knobs play no part in scoring
        merge(cfg, [(k, v) for k, v in read_yaml(cfg_path).items() if k in DOC and k != RECORDED], cfg_path)
    pairs = parse_overrides(list(overrides))
    merge(cfg, pairs, "the command line")
    if dataset_name:
        merge(cfg, [("dataset", dataset_name)], "--dataset")
    add_plugin_paths(cfg.plugin_path)
    dataset.spec(cfg.dataset)  # an unknown name: one line
    given = cfg_path is not None or bool(dataset_name) or any(key == "dataset" for key, _ in pairs)
    return cfg, model or cfg.model or cfg.model_s or None, given, cfg_path


def deployed_model(student, cfg, cfg_path, classes):
    """The model a student run of `cfg.distill` deploys (SimKD: with its projector and the
    teacher's classifier), built from the run's whole config (its method's knobs included)."""
    from distillers import Distiller, method_class
    method = method_class(cfg.distill)[0]
    if method.deployment.__func__ is Distiller.deployment.__func__:
        return student
    full = get_cfg_defaults(cfg.distill)
    merge(full, [(k, v) for k, v in read_yaml(cfg_path).items() if k in full and k != RECORDED], cfg_path)
    size = dataset.data_spec(cfg).image_size
    teacher = build_model(cfg.model_t, classes, cfg.teacher_input_size or size, cfg.model_t_kwargs)
    return method.deployment(student, teacher, full)


def _classes(weights):
    classifier = [v for v in weights.values() if v.dim() >= 2]   # linear, or MobileNetV2_tiny's 1x1 conv
    return classifier[-1].shape[0] if classifier else None


def _dataset_of(classes, path):
    if classes is None:
        raise UserError(f"{path} holds no classifier to tell the data set by: pass --dataset NAME")
    matches = [name for name in dataset.NAMES if name != "synthetic" and dataset.spec(name).num_classes == classes]
    # (imagefolder counts its classes from its files: it is named, never guessed)
    if len(matches) != 1:
        raise UserError(f"{path} has {classes} classes, which names no single data set: pass --dataset NAME "
                        f"({', '.join(dataset.NAMES)})")
    return matches[0]


def _architecture(weights, classes, path):
    exact, _ = identify_architecture(weights, classes)
    if len(exact) != 1:
        found = f"it matches {' / '.join(exact)}" if exact else "no model of the zoo has its keys and shapes"
        raise UserError(f"cannot tell which model {path} holds ({found}): pass --model NAME")
    return exact[0]


def resolve(checkpoint, cfg_path=None, overrides=(), model=None, dataset_name=None, batch_size=256, device="auto"):
    """(config, model name, whether the data set was given, config file or None, device) of an
    evaluation, every argument checked (UserError), before the checkpoint is read."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    cfg, name, given, cfg_path = run_config(checkpoint, cfg_path, overrides, model, dataset_name)
    if model is not None:
        get_model(model, "--model")
    return cfg, name, given, cfg_path, pick_device(device)


def load_model(checkpoint, cfg, name, given, cfg_path, ema=False):
    """(the checkpoint's model, in eval mode, and its name); sets cfg.dataset when not given.
    `ema`: the EMA weights of a latest.pth."""
    weights = checkpoint_weights(load_checkpoint(checkpoint), checkpoint, ema)
    if not given:
        cfg.dataset = _dataset_of(_classes(weights), checkpoint)
    classes = dataset.data_spec(cfg).num_classes
    name = name or _architecture(weights, classes, checkpoint)
    kwargs = cfg.model_kwargs if name == cfg.model else cfg.model_s_kwargs if name == cfg.model_s else {}
    net = build_model(name, classes, dataset.data_spec(cfg).image_size, kwargs)
    net = deployed_model(net, cfg, cfg_path, classes) if name == cfg.model_s and cfg_path else net
    return load_weights(net, weights, name, checkpoint).eval(), name


def evaluate_checkpoint(checkpoint, cfg_path=None, overrides=(), model=None, dataset_name=None,
                        batch_size=256, device="auto", ema=False):
    """Load `checkpoint` into its architecture and score it on its data set's test split:
    {checkpoint, model, dataset, images, top1, top5, loss, threads (the line of helper/threads.py)}.
    Every bad input is a UserError."""
    cfg, name, given, cfg_path, device = resolve(checkpoint, cfg_path, overrides, model, dataset_name, batch_size,
                                                 device)
    net, name = load_model(checkpoint, cfg, name, given, cfg_path, ema)
    threads = set_threads(device, cfg.num_threads, cfg.num_workers)
    result = score(net, cfg, device, batch_size, cfg.num_workers)
    why = diverged_score(result)
    if why:
        raise UserError(f"{checkpoint} ({name} on {cfg.dataset}) scores {why}: its weights have diverged")
    return {"checkpoint": checkpoint, "model": name, "dataset": cfg.dataset, **result, "threads": threads}
