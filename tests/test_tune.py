"""tune.py (helper/tune.py): studies of two methods with one budget on a tiny synthetic task, each
trial a run folder; the choice reads the validation scores alone (tested with the test scores
turned upside down); pruning; a killed study resumes without losing or repeating a trial; two
processes share one study; best.yaml and its reruns; a study without val_split is refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

import tune
from helper.config import load_config
from helper.grid import read_log
from runs import ROOT, call_cli


def tree(root, synthetic_dir, teacher_file, epochs=2, val_split=0.2):
    """A config tree (--configs) with KD and DKD on the pair `tiny` (resnet14 -> resnet8)."""
    for method, weights in (("kd_tiny", dict(distill="kd", alpha=0.9, beta=0.0)),
                            ("dkd_tiny", dict(distill="dkd", alpha=0.0, beta=1.0))):
        folder = root / "kds" / method
        folder.mkdir(parents=True)
        cfg = dict(dataset="synthetic", data_dir=synthetic_dir, synthetic_train_size=600, synthetic_test_size=200,
                   model_s="resnet8", model_t="resnet14", path_t=teacher_file, epochs=epochs, lr_decay_epochs="1",
                   batch_size=64, num_workers=0, print_freq=100, device="cpu", tensorboard=False,
                   val_split=val_split, gamma=1.0, **weights)
        (folder / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return str(root)


def args(configs, save, *extra):
    return ["--methods", "kd_tiny", "dkd_tiny", "--pairs", "tiny", "--configs", configs, "--save_root", str(save),
            *extra]


def study_trials(save, name="synthetic/tiny/kd_tiny"):
    import optuna
    from helper.tune import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(str(save / "studies.db"))).get_trials()


def test_two_methods_one_budget_chosen_on_validation_never_on_the_test_set(synthetic_dir, teacher_file, tmp_path,
                                                                            monkeypatch):
    """The test top-1 of every evaluation is turned upside down (100 - top-1): the study's choice
    and every trial's objective still follow the validation scores of the logs."""
    import dataset
    from helper import trainer
    build, evaluate = dataset.build_test_loader, trainer.evaluate

    def marked(cfg, batch_size=256, num_workers=0, split=None):
        loader = build(cfg, batch_size, num_workers, split)
        loader.is_test = split is None
        return loader
    monkeypatch.setattr(dataset, "build_test_loader", marked)
    monkeypatch.setattr(trainer, "evaluate", lambda model, loader, device: (
        lambda s: {**s, "top1": 100 - s["top1"]} if getattr(loader, "is_test", False) else s)(
            evaluate(model, loader, device)))
    save = tmp_path / "save"
    code, out = call_cli(tune, args(tree(tmp_path / "cfg", synthetic_dir, teacher_file), save, "--trials", "3",
                                     "--pruner", "none"))
    assert code == 0, out
    for method in ("kd_tiny", "dkd_tiny"):
        folder = save / "synthetic" / "tiny" / method
        record = json.loads((folder / "study.json").read_text())
        assert record["budget"]["trials"] == 3 and record["budget"]["epochs"] == 2 and record["finished_trials"] == 3
        trials = study_trials(save, f"synthetic/tiny/{method}")
        vals = {}
        for trial in trials:
            log = read_log(trial.user_attrs["run_folder"])
            assert trial.value == max(f["val_acc"] for f in log.values())  # the objective: validation alone
            assert all(f["test_acc"] >= 50 for f in log.values())  # (the upside-down test scores)
            vals[trial.number] = trial.value
        assert record["best_trial"] == max(vals, key=lambda n: (vals[n], -n))
        best = load_config(str(folder / "best.yaml"), [], "student")
        assert all(best[k] == pytest.approx(v) for k, v in record["best_params"].items())
        assert os.path.isfile(folder / "trial_0" / "config.yaml")
    assert "3 complete, 0 pruned of a budget of 3 trials x 2 epochs" in out


def test_a_pruned_trial_stops_after_its_first_evaluation(synthetic_dir, teacher_file, tmp_path, monkeypatch):
    import optuna

    from helper import tune as tuning
    monkeypatch.setattr(tuning, "make_pruner", lambda name, epochs: optuna.pruners.ThresholdPruner(lower=101.0))
    save = tmp_path / "save"
    code, out = call_cli(tune, args(tree(tmp_path / "cfg", synthetic_dir, teacher_file), save, "--trials", "2",
                                    "--methods", "kd_tiny"))
    assert code == 0, out
    trials = study_trials(save)
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for trial in trials:
        assert list(read_log(trial.user_attrs["run_folder"])) == [1]  # epoch 1 of 2, then pruned


def test_a_study_without_val_split_is_refused_in_one_line(synthetic_dir, teacher_file, tmp_path):
    code, out = call_cli(tune, args(tree(tmp_path / "cfg", synthetic_dir, teacher_file, val_split=0.0),
                                    tmp_path / "save"))
    assert code == 2 and out.count("\n") == 1 and "never on the test set" in out and "val_split" in out, out
    assert not (tmp_path / "save" / "synthetic").exists()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_killed_study_resumes_its_trial_and_runs_no_trial_twice(synthetic_dir, teacher_file, tmp_path, stop):
    """SIGKILL leaves the trial running for the next worker to find orphaned; SIGTERM ends the worker
    (never going on to another trial) with the trial asked again."""
    configs, save = tree(tmp_path / "cfg", synthetic_dir, teacher_file, epochs=3), tmp_path / "save"
    command = [sys.executable, os.path.join(ROOT, "tune.py"), *args(configs, save, "--methods", "kd_tiny",
                                                                     "--trials", "2", "--pruner", "none")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = save / "synthetic" / "tiny" / "kd_tiny" / "trial_0" / "log.txt"
    deadline = time.time() + 240
    while not log.exists() or "\nepoch 1 " not in log.read_text():
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.05)
    process.send_signal(stop)
    assert process.wait(timeout=120) in (-signal.SIGKILL, 128 + signal.SIGTERM), process.stdout.read()
    code, out = call_cli(tune, args(configs, save, "--methods", "kd_tiny", "--trials", "2", "--pruner", "none"))
    assert code == 0, out
    trials = study_trials(save)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1, states
    orphan = next(t for t in trials if t.state.name == "FAIL")
    retry = next(t for t in trials if t.user_attrs.get("resumes") == orphan.number)
    assert retry.params == orphan.params and retry.user_attrs["run_folder"] == orphan.user_attrs["run_folder"]
    assert "resuming after epoch 1" in log.read_text()  # its training went on, not again
    assert len({t.user_attrs["run_folder"] for t in trials if t.state.name == "COMPLETE"}) == 2


def test_two_processes_share_one_study(synthetic_dir, teacher_file, tmp_path):
    save = tmp_path / "save"
    code, out = call_cli(tune, args(tree(tmp_path / "cfg", synthetic_dir, teacher_file), save, "--methods", "kd_tiny",
                                    "--trials", "4", "--pruner", "none", "--runs-per-gpu", "2"))
    assert code == 0, out
    trials = study_trials(save)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # the budget exactly, not one more
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2
    assert len({t.user_attrs["run_folder"] for t in trials}) == 4


def test_the_slurm_path_through_submitits_debug_backend(synthetic_dir, teacher_file, tmp_path):
    save = tmp_path / "save"
    code, out = call_cli(tune, args(tree(tmp_path / "cfg", synthetic_dir, teacher_file), save, "--methods", "kd_tiny",
                                    "--trials", "2", "--pruner", "none", "--executor", "slurm", "--cluster", "debug"))
    assert code == 0, out
    assert "submitted 1 worker task(s)" in out and "2 complete, 0 pruned of a budget of 2 trials" in out
    assert [t.state.name for t in study_trials(save)] == ["COMPLETE"] * 2
