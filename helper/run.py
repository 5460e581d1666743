"""The run folder: where it is, whether it may be used, and every file written into it.

Files (CRD's checkpoint format, so other tools read them): `config.yaml`, `log.txt`,
`tensorboard/`, `<model>_best.pth` {epoch, model, best_acc}, `ckpt_epoch_N.pth`
{epoch, model, accuracy}, `<model>_last.pth` {opt, model, epoch, best_acc}, with `model_ema`
`<model>_ema_best.pth` and `<model>_ema_last.pth` (the EMA weights), and `latest.pth`
(everything a resume needs), and on CUDA `peak_memory.json` (helper/packing.py). Every file is
written atomically: complete or absent. `.lock` is held by the process that trains the folder.
"""
import datetime
import fcntl
import os
import socket
import warnings

import yaml

import dataset
from common.errors import UserError
from common.files import write_atomic

from . import checkpoint
from .config import dump, resume_differences, to_dict

LATEST = "latest.pth"
LOCK = ".lock"  # held (an OS file lock) by the process training the folder; released when it dies
PREVIOUS = "latest.prev.pth"  # the state before the last one: a fallback if latest.pth is damaged


def file_name(name):
    """A registry name as a part of a file name: a plugin's `pkg.module:Name` as `pkg.module.Name`."""
    return name.replace(":", ".")


def run_path(cfg, script):
    folder = cfg.save_folder
    if not folder:
        data = cfg.dataset
        if getattr(dataset.spec(data), "configure", None):  # a tree of the user's: named after its folder
            data = dataset.data_spec(cfg).name
        if script == "teacher":
            folder = os.path.join("save", "teacher_model", file_name(f"{cfg.model}_{data}"))
        else:
            folder = os.path.join("save", "student_model", file_name(data), file_name(cfg.distill),
                                  file_name(f"{cfg.model_t}_{cfg.model_s}"))
    return os.path.join(folder, f"trial_{cfg.trial}") if cfg.trial else folder


class RunFolder:
    """The run folder of `cfg`: `resume_state` is the latest.pth to continue (or None);
    `create()` makes the folder, once every check of the run has passed."""

    def __init__(self, cfg, script, write=True):
        self.path = run_path(cfg, script)
        self.model_name = file_name(cfg.model if script == "teacher" else cfg.model_s)
        self.config_dict = to_dict(cfg)
        self.write = write  # False on DDP ranks other than 0
        self.notes = []  # lines for the run's log (written once the folder exists)
        self.resume_state = self.find_resume(cfg)

    def file(self, name):
        return os.path.join(self.path, name)

    def load_latest(self):
        """latest.pth, or the previous state when latest.pth is missing or damaged."""
        latest, previous = self.file(LATEST), self.file(PREVIOUS)
        try:
            if os.path.exists(latest):
                return checkpoint.load_checkpoint(latest)
        except UserError as damaged:
            if not os.path.exists(previous):
                raise
            warnings.warn(f"{damaged}; resuming from the state before it, {previous}")
        # (latest.pth is also missing for a moment while it is being replaced)
        return checkpoint.load_checkpoint(previous) if os.path.exists(previous) else None

    def find_resume(self, cfg):
        state = self.load_latest()
        if state is None:
            if cfg.resume:
                if not self.holds_config_of(cfg):
                    raise UserError(f"resume asked for, but {self.file(LATEST)} does not exist: "
                                    f"start without 'resume True'")
                self.notes.append(f"resume asked for, but no epoch of this run finished in {self.path} "
                                  f"(no {LATEST}): starting from epoch 1")
            if os.path.isdir(self.path) and any(f.endswith(".pth") for f in os.listdir(self.path)):
                raise UserError(f"{self.path} holds checkpoints of another run: name a new trial "
                                f"(trial NAME) or another save_folder")
            return None
        diffs = resume_differences(state["config"], cfg)
        if diffs:
            raise UserError(f"{self.path} holds a run with another config ({'; '.join(diffs)}): "
                            f"name a new trial (trial NAME) or another save_folder")
        if state["finished"] and state["epoch"] >= cfg.epochs:
            raise UserError(f"{self.path} holds a finished run of {state['epoch']} epochs: name a new "
                            f"trial (trial NAME) or raise epochs to continue it")
        return state

    def holds_config_of(self, cfg):
        """Whether the folder's config.yaml is this run's (a run stopped in its first epoch)."""
        try:
            with open(self.file("config.yaml")) as f:
                saved = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            return False
        return isinstance(saved, dict) and not resume_differences(saved, cfg)

    def create(self, cfg):
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write the run folder {self.path} ({e.strerror}): "
                            f"choose another save_folder") from None
        self.lock()
        write_atomic(self.file("config.yaml"), dump(cfg).encode(), "the config")

    def lock(self):
        """Hold the folder's lock for this process's life, or refuse in one line naming its holder.
        An OS lock (flock): a holder that dies, even by kill -9, releases it."""
        handle = open(self.file(LOCK), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"{self.path} is being trained by {holder}: a second launch never trains the same "
                            f"run folder; wait for it to end (or stop it), or name a new trial") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
        handle.flush()
        self._lock = handle  # kept open: closing it would release the lock

    def release(self):
        """Let go of the folder's lock (the run is over)."""
        handle, self._lock = getattr(self, "_lock", None), None
        if handle is not None:
            handle.close()

    def save(self, name, obj):
        if self.write:
            checkpoint.save_atomic(obj, self.file(name))

    def save_epoch(self, model, epoch, accuracy, best_acc, improved):
        if improved:
            self.save_best(model, epoch, best_acc)
        if epoch % self.config_dict["save_freq"] == 0:
            self.save(f"ckpt_epoch_{epoch}.pth", {"epoch": epoch, "model": model.state_dict(), "accuracy": accuracy})

    def save_best(self, model, epoch, best_acc, kind=""):
        """<model>_best.pth, or <model>_ema_best.pth for the EMA weights (kind "ema_")."""
        self.save(f"{self.model_name}_{kind}best.pth", {"epoch": epoch, "model": model.state_dict(), "best_acc": best_acc})

    def save_last(self, model, epoch, best_acc, kind=""):
        self.save(f"{self.model_name}_{kind}last.pth", {"opt": self.config_dict, "model": model.state_dict(),
                                                         "epoch": epoch, "best_acc": best_acc})

    def save_latest(self, state):
        """Keep the previous state as latest.prev.pth, then write the new one."""
        if self.write and os.path.exists(self.file(LATEST)):
            os.replace(self.file(LATEST), self.file(PREVIOUS))
        self.save(LATEST, state)
