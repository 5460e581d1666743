"""--check: what a run would do, without training, downloading or writing anything.

    python train_teacher.py -cfg FILE [KEY VALUE ...] --check
    python train_student.py -cfg FILE [KEY VALUE ...] --check
    python evaluate.py CKPT [...] --check

The config meets every refusal of a real run; the models and the method are built (their
parameter counts printed; the teacher with random weights when path_t is not there; the method
on the training labels, or on STAND_IN_LABELS balanced ones while the data set is not on disk);
the run folder, the data set's files and the teacher's path_t are looked up. The exit status:
  0  the run would start;
  1  the config is valid, but something on disk would stop the run: a file not found that the
     run cannot download or generate (path_t, a library's pretrained weights absent from the
     local cache, the data set, the checkpoint to evaluate), or a
     run folder a real run refuses (a finished run, another run's checkpoints); each is a
     `problem:` line;
  2  the same one-line error as the run (config, model, method or device), on stderr.
"""
import os

import torch

import dataset
from common.errors import UserError
from distillers import build
from models.pretrained import NotCached

from .run import RunFolder, run_path
from .session import Session, build_teacher, missing_teacher

STAND_IN_LABELS = 50000  # CIFAR's training set; CRD sizes its memory by the labels


def count(model):
    return sum(p.numel() for p in model.parameters())


class Report:
    """The lines of a check of a `task` (printed by rank 0 only) and the problems among them."""

    def __init__(self, task="run", show=True):
        self.task, self.show, self.problems = task, show, []

    def line(self, what, text):
        if self.show:
            print(f"{what + ':':<12}{text}", flush=True)

    def problem(self, what, text):
        self.problems.append(f"{what}: {text}")
        self.line(what, f"PROBLEM: {text}")

    def end(self):
        """The exit status, after the verdict: 0 when nothing would stop the run, else 1."""
        if not self.problems:
            self.line("check", f"passed: the {self.task} would start (nothing was run or written)")
            return 0
        self.line("check", f"{len(self.problems)} problem(s) would stop the {self.task} (nothing was run or written):")
        for text in self.problems:
            self.line("problem", text)
        return 1


def check_data(report, cfg):
    """Report the data set's files; returns their state (dataset.locate_data)."""
    state, text = dataset.locate_data(cfg)
    (report.problem if state == "missing" else report.line)("data", f"{cfg.dataset}: {text}")
    return state


def check_run_folder(report, cfg, script):
    path = run_path(cfg, script)
    try:
        folder = RunFolder(cfg, script, write=False)  # reads latest.pth and config.yaml, writes nothing
    except UserError as e:  # a folder a real run refuses
        report.problem("run folder", str(e))
        return
    state = folder.resume_state
    if state:
        report.line("run folder", f"{path} exists: the run resumes after epoch {state['epoch']}")
    elif os.path.isdir(path):
        report.line("run folder", f"{path} exists, no epoch finished there: the run starts in it")
    else:
        report.line("run folder", f"{path} (not there yet: the run creates it)")
    for note in folder.notes:
        report.line("run folder", note)


def training_targets(cfg, state, num_classes):
    """The training labels the method is built on: the training part of the data set (val_split's
    refusals included) when its files are there, else STAND_IN_LABELS balanced stand-ins."""
    if state == "found":
        return torch.as_tensor(dataset.training_parts(cfg)[0].targets)
    return torch.arange(STAND_IN_LABELS) % num_classes


def check_run(cfg_path, overrides, script):
    """train_teacher.py / train_student.py --check; returns the exit status (module docstring)."""
    session = Session(cfg_path, overrides, script, check=True)
    cfg, ctx = session.cfg, session.ctx
    report = Report("run", show=ctx.is_main)
    on = f"{session.device}" + (f" x {ctx.world_size} processes" if ctx.enabled else "")
    report.line("config", f"{cfg_path}: valid ({cfg.epochs} epochs, batch_size {cfg.batch_size}, on {on})")
    state = check_data(report, cfg)
    if state != "found" and getattr(dataset.spec(cfg.dataset), "configure", None):
        report.line("models", "not built: the data set's files say their classes and the run folder's name")
        return report.end()
    session.spec = spec = dataset.data_spec(cfg)
    check_run_folder(report, cfg, script)
    teacher = None
    if script == "student":
        missing = missing_teacher(cfg)
        try:
            teacher = build_teacher(session, weights=not missing)
        except NotCached as e:  # torchvision:WEIGHTS / timm:TAG not downloaded here
            missing = str(e)
            teacher = build_teacher(session, weights=False)
        if missing:
            report.problem("teacher", missing)
        weights = "random weights: path_t not found" if missing else f"from {cfg.path_t}"
        report.line("teacher", f"{cfg.model_t}: {count(teacher):,} parameters ({weights})")
        student = session.build_model(cfg.model_s, cfg.model_s_kwargs)
        report.line("student", f"{cfg.model_s}: {count(student):,} parameters")
    else:
        student = session.build_model(cfg.model, cfg.model_kwargs)
        report.line("model", f"{cfg.model}: {count(student):,} parameters")
    distiller = build(cfg, student, teacher, training_targets(cfg, state, spec.num_classes)).to(session.device)
    session.min_batch(distiller)
    report.line("method", f"{cfg.distill}: {count(distiller) - count(student):,} parameters of its own")
    if distiller.deployed is not distiller.student:
        report.line("method", f"deploys {type(distiller.deployed).__name__}: {count(distiller.deployed):,} parameters")
    return report.end()


def check_evaluation(checkpoint, cfg_path=None, overrides=(), model=None, dataset_name=None,
                     batch_size=256, device="auto", ema=False):
    """evaluate.py --check: the checkpoint, config, model and data set resolved as evaluate.py
    resolves them, the model loaded, nothing scored; returns the exit status (module docstring)."""
    from .evaluate import load_model, resolve
    cfg, name, given, cfg_path, device = resolve(checkpoint, cfg_path, overrides, model, dataset_name, batch_size,
                                                 device)
    report = Report("evaluation")
    report.line("config", f"{cfg_path or 'none: the defaults'} (on {device}, batch size {batch_size})")
    if os.path.isfile(checkpoint):
        net, name = load_model(checkpoint, cfg, name, given, cfg_path, ema)
        report.line("checkpoint", f"{checkpoint}: {name}, {count(net):,} parameters")
    else:
        report.problem("checkpoint", f"{checkpoint} not found: give a checkpoint file (a run folder's "
                                     f"<model>_best.pth, <model>_last.pth, ckpt_epoch_N.pth or latest.pth)")
        report.line("model", name or "told by the checkpoint's keys (or --model NAME)")
        if not given:
            report.line("data", "told by the checkpoint's classes (or --dataset NAME)")
            return report.end()
    check_data(report, cfg)
    return report.end()
