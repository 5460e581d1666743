"""No silent NaN from a legal config (issue 11), end to end through the scripts: a final batch
too small for the method or for a model's BatchNorms is dropped and counted, a batch_size or knob that makes a loss
undefined is refused before the run folder exists, a non-finite loss names its term and its
likely cause, and a run killed in its first epoch starts again under `resume True`."""
import os
import signal
import time

import pytest
import torch

import distillers.rkd
from dataset.synthetic import write_synthetic_cifar100
from helper.session import check_method
from runs import assert_same_weights, make_cfg, run_script, start_script, tiny_config, weights


@pytest.fixture(scope="module")
def data_33(tmp_path_factory):
    """33 training images: with batch_size 16 the last batch holds one image."""
    root = str(tmp_path_factory.mktemp("data33"))
    write_synthetic_cifar100(root, 33, 20, seed=0)
    return root


def student(data_dir, run, teacher_file, **extra):
    cfg = tiny_config(data_dir, str(run), model_s="resnet8", model_t="resnet14", path_t=teacher_file,
                      synthetic_train_size=33, synthetic_test_size=20, batch_size=16, epochs=1,
                      lr_decay_epochs="1", print_freq=1, alpha=0.0, beta=1.0)
    cfg.pop("model")
    cfg.update(extra)
    return cfg


def epoch_line(run, epoch=1):
    return next(line for line in open(os.path.join(run, "log.txt")) if line.startswith(f"epoch {epoch} "))


@pytest.mark.parametrize("method,fast", [("rkd", False), ("correlation", False), ("similarity", False),
                                         ("rkd", True)])
def test_a_one_image_final_batch_is_dropped_and_counted(method, fast, data_33, teacher_file, tmp_path,
                                                        write_cfg):
    run = tmp_path / "run"
    code, out, err = run_script("train_student.py",
                                write_cfg(student(data_33, run, teacher_file, distill=method, fast=fast)))
    assert code == 0, out + err
    line = epoch_line(run)
    assert " dropped 1 " in line and "nan" not in line, line


def test_a_library_model_whose_batchnorm_sees_one_value_drops_a_one_image_final_batch(data_33, teacher_file, tmp_path,
                                                                                      write_cfg):
    """timm's resnet18 ends in a 1x1 map on 32-pixel images: its last BatchNorms cannot normalise
    one image in training mode, so the final batch of one is dropped and counted (the zoo's
    models, whose last map is 8x8, train it)."""
    run = tmp_path / "run"
    cfg = student(data_33, run, teacher_file, distill="kd", model_s="timm:resnet18", alpha=0.9, beta=0.0)
    code, out, err = run_script("train_student.py", write_cfg(cfg))
    assert code == 0, out + err
    line = epoch_line(run)
    assert " dropped 1 " in line and "nan" not in line, line


def test_a_method_that_takes_one_sample_keeps_the_final_batch(data_33, teacher_file, tmp_path, write_cfg):
    run = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(student(data_33, run, teacher_file, distill="ASKD")))
    assert code == 0, out + err
    assert "dropped" not in epoch_line(run)


@pytest.mark.parametrize("extra,expected", [
    (dict(distill="rkd", batch_size=1), "method 'rkd' compares the samples of a batch and needs at least 2"),
    (dict(distill="correlation", batch_size=1), "set batch_size 2 or more"),
    (dict(distill="ASKD", r=1), "'r' (ASKD's knob) must be at least 2"),
    (dict(distill="kd", model_s="timm:resnet18", batch_size=1), "sees a single value per channel for one 32-pixel "
                                                               "image, so it needs batches of 2"),
    (dict(distill="simkd", simkd_factor=100), "the teacher's feats[-2] has 64 channels, divided by simkd_factor: "
                                              "set simkd_factor 64 or less for this pair"),
])
def test_configs_whose_loss_is_undefined_are_refused(extra, expected, data_33, teacher_file, tmp_path, write_cfg):
    run = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(student(data_33, run, teacher_file, **extra)))
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not run.exists()


def test_the_minimum_batch_is_per_process():
    check_method(make_cfg("rkd", batch_size=2), 1)
    with pytest.raises(Exception, match=r"per process \(2 processes\).*set batch_size 4 or more"):
        check_method(make_cfg("rkd", batch_size=2), 2)
    with pytest.raises(Exception, match="method 'kdsvd' reads the GPU from the host.*set cuda_graph false"):
        check_method(make_cfg("kdsvd", batch_size=2, cuda_graph=True), 1)


class OneByOne(torch.nn.Module):
    """A model whose maps end at 1x1 (as a deep model on small images would)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=32, padding=1)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x, is_feat=False, preact=False):
        f = self.conv(x)
        logits = self.fc(f.flatten(1))
        return ([f, f.flatten(1)], logits) if is_feat else logits


def test_askd_refuses_maps_smaller_than_two_by_two():
    from common.errors import UserError
    from distillers import build
    from helper.config import get_cfg_defaults
    cfg = get_cfg_defaults("ASKD")
    with pytest.raises(UserError, match="needs maps of at least 2x2, got 1x1"):
        build(cfg, OneByOne(), OneByOne())


def test_a_non_finite_first_step_names_the_term_and_the_config(data_33, teacher_file, tmp_path, write_cfg,
                                                               monkeypatch):
    def broken(self, *args):
        terms = original(self, *args)
        return dict(terms, rkd_distance=terms["rkd_distance"] * float("nan"))
    original = distillers.rkd.RKD.method_losses
    monkeypatch.setattr(distillers.rkd.RKD, "method_losses", broken)
    run = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(student(data_33, run, teacher_file, distill="rkd")))
    assert code == 2 and err.count("\n") == 1, out + err
    assert "loss term rkd_distance became non-finite by epoch 1/1 step 1" in err
    assert "the config is the likely cause, not the learning rate" in err
    assert not os.path.exists(run / "latest.pth")


def test_a_late_non_finite_loss_points_at_the_learning_rate():
    from helper.trainer import NonFiniteLoss, Trainer

    class Run:
        path = "RUN"
    trainer = Trainer.__new__(Trainer)
    trainer.run, trainer.logger = Run(), None
    with pytest.raises(NonFiniteLoss, match=r"loss term cc became non-finite.*lower learning_rate"):
        trainer.non_finite("epoch 7/240", 3, {"ce": 1.0, "cc": float("inf")},
                           {"ce": torch.tensor(1.0), "cc": torch.tensor(float("inf"))}, 0.05, early=False)


def test_a_run_killed_in_its_first_epoch_starts_again_under_resume(synthetic_dir, tmp_path, write_cfg):
    def config(folder):
        return write_cfg(tiny_config(synthetic_dir, str(folder), batch_size=8, print_freq=1))

    whole = tmp_path / "whole"
    assert run_script("train_teacher.py", config(whole))[0] == 0

    killed = tmp_path / "killed"
    process = start_script("train_teacher.py", config(killed))
    start = time.time()
    while not os.path.exists(killed / "log.txt"):
        assert process.poll() is None and time.time() - start < 120, process.stdout.read()
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert os.path.exists(killed / "config.yaml")
    assert not os.path.exists(killed / "latest.pth")      # killed before its first epoch ended

    code, out, err = run_script("train_teacher.py", config(killed), "resume", "True")
    assert code == 0, out + err
    assert "no epoch of this run finished" in out and "starting from epoch 1" in out
    assert_same_weights(weights(whole / "resnet8_last.pth"), weights(killed / "resnet8_last.pth"))

    other = tmp_path / "other"
    os.makedirs(other)
    (other / "config.yaml").write_text((killed / "config.yaml").read_text().replace("seed: 0", "seed: 1"))
    code, _, err = run_script("train_teacher.py", config(other), "resume", "True")
    assert code == 2 and "resume asked for, but" in err and "latest.pth does not exist" in err
    assert os.listdir(other) == ["config.yaml"]
