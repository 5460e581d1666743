"""tune.py's studies: one Optuna study per (data set, pair, method) over the method's declared knobs,
each trial an ordinary run folder, chosen on the held-out images alone.

- The space: every knob of the method that declares a `space` (common/knobs.py), `beta` when the
  config weighs the method (a log range from a tenth to ten times its value), `alpha` and `kd_T` when
  it weighs Hinton's KD, `kd_T` when the method reads it (`tunes`), and the common keys asked for
  (`--tune-common learning_rate weight_decay`: a log range a tenth to ten times theirs).
- The objective: the run's best top-1 on its `val_split` hold-out (the epoch its best checkpoint is),
  reported to Optuna after each evaluated epoch (`Trainer.on_evaluated`, which gets the validation
  score alone) so its pruner (median or Hyperband) may stop it. A config without val_split is refused.
- The budget: `trials` finished trials (complete or pruned) of the configs' epochs, the same for
  every method of one call (the epochs must agree: `--set epochs N`), recorded in the study.
- Storage: Optuna's own, a SQLite file (`.db`, `.sqlite`) or its journal file (any other name): a study
  survives a kill and several processes or Slurm jobs share it. A new trial is asked under a lock file
  beside the storage, so that several workers never run more than `trials`. A trial left running by
  a worker that died (its process gone on this host, or the requeued Slurm task itself) is marked
  failed and asked again with its parameters: its run folder resumes from latest.pth, so no training
  is lost and no trial is counted twice. A worker stopped by a signal (Ctrl-C, SIGTERM, a cluster's
  warning) does the same for its trial, then ends.
- At the end: `best.yaml` (the method's config as its base, the best values over it) in the study's
  folder, and with `rerun` N seeds of it on the whole training set (val_split 0), their test top-1.
"""
import fcntl
import json
import math
import os
import socket
import time

from common.errors import UserError
from common.knobs import Space, declared_knobs, log_range

from .stats import interval

FINISHED = ("COMPLETE", "PRUNED")


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("tune.py needs optuna: pip install optuna (requirements.txt lists it)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(path):
    """Optuna's storage in the file `path`: SQLite for .db / .sqlite, else its journal file."""
    optuna = require_optuna()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if path.endswith((".db", ".sqlite", ".sqlite3")):
        return optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(path)}", engine_kwargs={
            "connect_args": {"timeout": 60}})
    from optuna.storages.journal import JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(os.path.abspath(path)))


def search_space(cfg, tune_common=()):
    """{key: Space} of a loaded config (module docstring)."""
    from distillers import method_class
    method = method_class(cfg.distill)[0]
    space = {knob.name: knob.space for knob in declared_knobs(method).values() if knob.space is not None}
    around = lambda value: log_range(value / 10, value * 10)  # noqa: E731
    if cfg.beta > 0:
        space["beta"] = around(cfg.beta)
    if cfg.alpha > 0:
        space["alpha"] = around(cfg.alpha)
    if cfg.alpha > 0 or "kd_T" in method.tunes:
        space["kd_T"] = Space("linear", 1.0, 8.0)
    for key in tune_common:
        if key not in cfg or isinstance(cfg[key], (str, bool, list, dict)) or cfg[key] <= 0:
            raise UserError(f"--tune-common {key}: a positive number of the config is needed (learning_rate, "
                            f"weight_decay, ...)")
        space[key] = around(cfg[key])
    if not space:
        raise UserError(f"method '{cfg.distill}' declares no knob to search and weighs no loss (beta 0, alpha 0): "
                        f"nothing to tune (add --tune-common learning_rate)")
    return space


def make_pruner(name, epochs):
    optuna = require_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


class Study:
    """One study (`name`, e.g. cifar100/resnet32x4_resnet8x4/dkd) of a method's config `cfg_path` with
    `overrides`, its trials in `folder`."""

    def __init__(self, name, cfg_path, overrides, folder, storage_path, trials, pruner="median", tune_common=(),
                 seed=0):
        from .config import load_config
        self.name, self.cfg_path, self.overrides, self.folder = name, cfg_path, list(overrides), folder
        self.trials, self.storage_path = trials, storage_path
        self.cfg = load_config(cfg_path, self.overrides, "student")
        if not self.cfg.val_split:
            raise UserError(f"{name}: a study chooses on held-out training images, never on the test set, and "
                            f"{cfg_path} holds none out: --set val_split 0.1 (or set it in the config)")
        self.space = search_space(self.cfg, tune_common)
        optuna = require_optuna()
        self.storage = open_storage(storage_path)
        self.study = optuna.create_study(storage=self.storage, study_name=name, direction="maximize",
                                         load_if_exists=True, pruner=make_pruner(pruner, self.cfg.epochs),
                                         sampler=optuna.samplers.TPESampler(seed=seed))
        self.study.set_user_attr("budget", {"trials": trials, "epochs": self.cfg.epochs,
                                            "objective": f"best top-1 on the val_split {self.cfg.val_split} "
                                                         f"hold-out (never the test set)"})
        self.study.set_user_attr("space", {k: [s.kind, s.low, s.high, list(s.choices)] for k, s in self.space.items()})
        self.study.set_user_attr("config", {"file": cfg_path, "overrides": [str(o) for o in self.overrides]})

    # -- the trials -----------------------------------------------------------------------------
    def count(self, states):
        return sum(t.state.name in states for t in self.study.get_trials(deepcopy=False))

    def lock(self):
        handle = open(self.storage_path + ".lock", "a+")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def next_trial(self):
        """A new trial of the study (orphans first asked again), or None when the budget is reached:
        asked under the storage's lock, so that workers never run more than `trials`."""
        handle = self.lock()
        try:
            self.retry_orphans()
            if self.count(FINISHED + ("RUNNING",)) >= self.trials:  # a WAITING retry is asked next, not counted
                return None
            trial = self.study.ask()
            trial.set_user_attr("worker", worker_id())
            return trial
        finally:
            handle.close()

    def retry_orphans(self):
        """Mark failed the trials left running by a dead worker, and ask each again (its parameters,
        its run folder: the run resumes)."""
        optuna = require_optuna()
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if orphaned(trial.user_attrs.get("worker")):
                self.ask_again(trial, trial.user_attrs.get("run_folder", self.run_folder(trial.number)))

    def ask_again(self, trial, folder):
        """Mark a trial failed and ask it again: its parameters, its run folder (the run resumes).
        Under the storage's lock."""
        self.study.tell(trial.number, state=require_optuna().trial.TrialState.FAIL)
        self.study.enqueue_trial(trial.params, user_attrs={"run_folder": folder, "resumes": trial.number})

    def run_folder(self, number):
        return os.path.join(self.folder, f"trial_{number}")

    def run_trial(self, trial):
        """Train the trial's config, reporting each epoch's validation top-1; tell the study the outcome."""
        optuna = require_optuna()
        from .session import distil
        from .trainer import Interrupted
        values = {key: space.suggest(trial, key) for key, space in self.space.items()}
        folder = trial.user_attrs.get("run_folder") or self.run_folder(trial.number)
        trial.set_user_attr("run_folder", folder)
        overrides = self.overrides + [str(x) for key, value in values.items() for x in (key, value)]
        overrides += ["save_folder", folder]
        best = [-math.inf]
        for epoch, fields in self.logged(folder).items():  # a retried trial's epochs before the kill
            best[0] = max(best[0], fields["val_acc"])
            trial.report(fields["val_acc"], epoch)
        if self.finished(folder):  # trained to the end before its worker died: nothing left to run
            self.study.tell(trial, best[0])
            return "complete", best[0]

        def on_evaluated(epoch, val_top1):
            best[0] = max(best[0], val_top1)
            trial.report(val_top1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: val top-1 {val_top1:.2f}")
        try:
            distil(self.cfg_path, overrides, on_evaluated=on_evaluated)
        except optuna.TrialPruned:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return "pruned", best[0]
        except Interrupted:  # a stop signal ends this worker; the next one resumes the trial's run folder
            handle = self.lock()
            try:
                self.ask_again(trial, folder)
            finally:
                handle.close()
            raise
        except UserError as e:  # (a finished run: its folder refuses; its record says why)
            trial.set_user_attr("error", str(e))
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return "failed", None
        self.study.tell(trial, best[0])
        return "complete", best[0]

    @staticmethod
    def logged(folder):
        """{epoch: log fields} of the evaluated epochs a run folder's log holds (val_acc in each)."""
        from .grid import read_log
        if not os.path.isfile(os.path.join(folder, "log.txt")):
            return {}
        return {epoch: fields for epoch, fields in read_log(folder).items() if "val_acc" in fields}

    def finished(self, folder):
        from .grid import run_state
        return os.path.isdir(folder) and run_state(folder, self.cfg.epochs)[0] == "finished"

    def work(self):
        """Run trials until the budget is reached: (completed, pruned, failed) of this worker."""
        counts = {"complete": 0, "pruned": 0, "failed": 0}
        while True:
            trial = self.next_trial()
            if trial is None:
                return counts
            outcome, value = self.run_trial(trial)
            counts[outcome] += 1
            print(f"{self.name} trial {trial.number}: {outcome}" + (f", val top-1 {value:.2f}" if value is not None
                                                                      and value > -math.inf else ""), flush=True)

    # -- the end ------------------------------------------------------------------------------
    def write_best(self):
        """best.yaml in the study's folder: the method's config as its base, the best values over it."""
        import yaml
        best = self.study.best_trial
        data = {"base": os.path.relpath(os.path.abspath(self.cfg_path), os.path.abspath(self.folder))}
        for key, value in zip(self.overrides[::2], self.overrides[1::2]):
            data[key] = _read(str(value))
        data.update(best.params)
        data["val_split"] = self.cfg.val_split
        path = os.path.join(self.folder, "best.yaml")
        os.makedirs(self.folder, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"# {self.name}: the best of {self.count(FINISHED)} trials (trial {best.number}, val top-1 "
                    f"{best.value:.2f}), chosen on the val_split hold-out; storage {self.storage_path}\n")
            yaml.safe_dump(data, f, sort_keys=False)
        record = {"study": self.name, "storage": self.storage_path, **self.study.user_attrs,
                  "finished_trials": self.count(FINISHED), "best_trial": best.number, "best_val_top1": best.value,
                  "best_params": best.params}
        with open(os.path.join(self.folder, "study.json"), "w") as f:
            json.dump(record, f, indent=1)
        return path

    def rerun(self, seeds, best_path):
        """The best config with `seeds` seeds on the whole training set (val_split 0): their test top-1
        (each run's last epoch) and its interval."""
        from .grid import read_log, top1
        from .session import distil
        values = []
        for seed in range(seeds):
            folder = os.path.join(self.folder, f"best_seed_{seed}")
            distil(best_path, ["val_split", "0", "seed", str(seed), "save_folder", folder])
            values.append(top1(read_log(folder), "last", self.cfg.epochs))
        return values, interval(values)


def _read(text):
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None else value


def worker_id():
    """This worker: its host and process, and its Slurm job and task when it is one."""
    job = os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm": f"{job}_{task}" if job else None,
            "since": time.time()}


def orphaned(worker):
    """Whether a RUNNING trial's worker is gone: the same Slurm task requeued (this process), or a process
    of this host that no longer runs."""
    if not worker:
        return False
    me = worker_id()
    if worker.get("slurm") and worker["slurm"] == me["slurm"]:
        return worker["pid"] != me["pid"] or worker["host"] != me["host"]
    if worker.get("host") != me["host"]:
        return False
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
