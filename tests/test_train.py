"""The shared loop through train_teacher.py: files of a run, schedule, seeds, refusals, NaN guard."""
import os

import pytest
import torch

from helper.checkpoint import load_checkpoint
from helper.config import get_cfg_defaults
from helper.recipe import step_decay as learning_rate
from models import model_dict
from runs import assert_same_weights, run_script, tiny_config, weights


@pytest.fixture
def teacher_cfg(write_cfg, synthetic_dir, tmp_path):
    def make(**extra):
        return write_cfg(tiny_config(synthetic_dir, str(tmp_path / "run"), **extra))
    return make


def test_teacher_run_writes_every_file(teacher_cfg, tmp_path):
    code, out, err = run_script("train_teacher.py", teacher_cfg(tensorboard=True))
    assert code == 0, err
    run = tmp_path / "run"
    names = set(os.listdir(run))
    assert {"config.yaml", "log.txt", "tensorboard", "latest.pth", "resnet8_best.pth",
            "resnet8_last.pth", "ckpt_epoch_1.pth", "ckpt_epoch_2.pth"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    epochs = [line for line in (run / "log.txt").read_text().splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    for field in ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "test_acc_top5", "seconds"):
        assert f" {field} " in epochs[0]
    assert "lr 0.05 " in epochs[0] and "lr 0.005 " in epochs[1]

    best, ckpt, last, latest = (load_checkpoint(str(run / n)) for n in
                                ("resnet8_best.pth", "ckpt_epoch_1.pth", "resnet8_last.pth", "latest.pth"))
    assert {"epoch", "model", "best_acc"} <= set(best)
    assert {"epoch", "model", "accuracy"} <= set(ckpt) and ckpt["epoch"] == 1
    assert {"opt", "model"} <= set(last) and last["opt"]["model"] == "resnet8"
    assert latest["finished"] and latest["epoch"] == 2 and "optimizer" in latest
    model_dict["resnet8"](num_classes=100).load_state_dict(last["model"], strict=True)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"lr", "train_loss", "test_acc", "test_acc_top5"} <= set(tags)
    assert [e.step for e in events.Scalars("test_acc")] == [1, 2]


def test_same_seed_gives_bit_identical_weights(write_cfg, synthetic_dir, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        path = write_cfg(tiny_config(synthetic_dir, str(tmp_path / name), seed=seed))
        code, _, err = run_script("train_teacher.py", path)
        assert code == 0, err
        runs[name] = weights(str(tmp_path / name / "resnet8_last.pth"))
    assert_same_weights(runs["a"], runs["b"])
    assert not torch.equal(runs["a"]["fc.weight"], runs["c"]["fc.weight"])


def test_step_schedule_counts_epochs_from_one():
    cfg = get_cfg_defaults()
    assert [learning_rate(cfg, e) for e in (1, 150, 151, 180, 181, 210, 211, 240)] == pytest.approx(
        [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005, 0.00005, 0.00005])


def test_finished_run_is_never_overwritten(teacher_cfg, tmp_path):
    path = teacher_cfg(epochs=1)
    assert run_script("train_teacher.py", path)[0] == 0
    best = tmp_path / "run" / "resnet8_best.pth"
    before = best.read_bytes()
    code, _, err = run_script("train_teacher.py", path)
    assert code == 2 and "finished run" in err and "trial" in err
    assert best.read_bytes() == before
    code, _, err = run_script("train_teacher.py", path, "trial", "2")
    assert code == 0, err
    assert (tmp_path / "run" / "trial_2" / "resnet8_last.pth").exists()


def test_extending_epochs_continues_a_finished_run(teacher_cfg, tmp_path):
    assert run_script("train_teacher.py", teacher_cfg(epochs=1))[0] == 0
    code, out, err = run_script("train_teacher.py", teacher_cfg(epochs=2))
    assert code == 0, err
    assert "resuming after epoch 1" in out
    assert load_checkpoint(str(tmp_path / "run" / "latest.pth"))["epoch"] == 2


def test_resume_with_another_config_is_refused(teacher_cfg, tmp_path):
    assert run_script("train_teacher.py", teacher_cfg(epochs=1))[0] == 0
    code, _, err = run_script("train_teacher.py", teacher_cfg(epochs=2, learning_rate=0.1))
    assert code == 2 and "learning_rate: 0.05 -> 0.1" in err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(teacher_cfg, tmp_path, monkeypatch):
    assert run_script("train_teacher.py", teacher_cfg(epochs=1))[0] == 0
    run = tmp_path / "run"
    kept = {n: (run / n).read_bytes() for n in ("resnet8_best.pth", "latest.pth", "ckpt_epoch_1.pth")}

    from distillers.base import Vanilla
    real_forward = Vanilla.forward

    def poisoned(self, image, target, index=None):
        logits, losses = real_forward(self, image, target, index)
        losses["ce"] = losses["ce"] * float("nan")
        return logits, losses
    monkeypatch.setattr(Vanilla, "forward", poisoned)
    code, _, err = run_script("train_teacher.py", teacher_cfg(epochs=2))
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "non-finite" in line and "step 1" in line and "ce=nan" in line and "lr 0.005" in line
    assert "Traceback" not in err
    for name, content in kept.items():
        assert (run / name).read_bytes() == content, name
    assert not (run / "ckpt_epoch_2.pth").exists()


def test_missing_data_without_download_is_one_line(write_cfg, tmp_path):
    path = write_cfg(tiny_config(str(tmp_path / "nodata"), str(tmp_path / "run"),
                                 dataset="cifar100", download=False))
    code, _, err = run_script("train_teacher.py", path)
    assert code == 2 and err.startswith("error: CIFAR-100 not found") and err.count("\n") == 1


def test_damaged_latest_falls_back_to_the_previous_state(teacher_cfg, tmp_path):
    assert run_script("train_teacher.py", teacher_cfg(epochs=2))[0] == 0
    run = tmp_path / "run"
    previous = load_checkpoint(str(run / "latest.prev.pth"))
    assert previous["epoch"] == 2 and not previous["finished"]
    latest = run / "latest.pth"
    latest.write_bytes(latest.read_bytes()[:1000])  # a damaged disk
    with pytest.warns(UserWarning, match="latest.pth is truncated or corrupt.*latest.prev.pth"):
        code, out, err = run_script("train_teacher.py", teacher_cfg(epochs=3, lr_decay_epochs="1"))
    assert code == 0, err
    assert "resuming after epoch 2" in out
    assert load_checkpoint(str(latest))["epoch"] == 3


def test_damaged_checkpoint_without_fallback_is_named(teacher_cfg, tmp_path):
    assert run_script("train_teacher.py", teacher_cfg(epochs=1))[0] == 0
    run = tmp_path / "run"
    (run / "latest.pth").write_bytes(b"garbage")
    (run / "latest.prev.pth").unlink()
    code, _, err = run_script("train_teacher.py", teacher_cfg(epochs=2))
    assert code == 2 and "latest.pth" in err and err.count("\n") == 1
