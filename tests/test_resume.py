"""Exact resume: a run killed mid-epoch (SIGKILL) or stopped (SIGTERM) and run again ends with
weights bit-identical to the same run uninterrupted: teacher training, ASKD, CRD, and KD with every
part of timm's recipe on."""
import os
import signal
import time

import pytest

from helper.checkpoint import load_checkpoint
from runs import assert_same_weights, run_script, start_script, tiny_config, weights



STUDENT = dict(model_s="resnet8", model_t="resnet14", gamma=1.0, alpha=0.0, beta=1.0)
METHODS = {
    "teacher": ("train_teacher.py", {}),
    "ASKD": ("train_student.py", dict(STUDENT, distill="ASKD", r=2)),
    "crd": ("train_student.py", dict(STUDENT, distill="crd", beta=0.8, nce_k=64, feat_dim=16)),
    # KD with every part of timm's recipe on: AdamW, a per-step cosine with warm-up, smoothing, Mixup
    # and CutMix, RandAugment and random erasing, clipping, the EMA
    "recipe": ("train_student.py", dict(STUDENT, distill="kd", alpha=0.9, beta=0.0, optimizer="adamw",
                                        learning_rate=1e-3, weight_decay=0.05, lr_schedule="cosine",
                                        lr_warmup_epochs=1, sched_on_updates=True, min_lr=1e-5,
                                        label_smoothing=0.1, mixup=0.8, cutmix=1.0, transform="timm",
                                        auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25, clip_grad=1.0,
                                        model_ema=True, model_ema_decay=0.9)),
}


def config(write_cfg, synthetic_dir, folder, method, teacher_file):
    script, extra = METHODS[method]
    cfg = tiny_config(synthetic_dir, folder, epochs=3, lr_decay_epochs="2", batch_size=16, **extra)
    if script == "train_student.py":
        cfg.update(path_t=teacher_file)
        cfg.pop("model")
    return script, write_cfg(cfg)


def wait_for_epoch(folder, epoch, process, limit=240):
    log = os.path.join(folder, "log.txt")
    start = time.time()
    while time.time() - start < limit:
        if os.path.exists(log) and any(line.startswith(f"epoch {epoch} ") for line in open(log)):
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} never finished")


@pytest.mark.parametrize("method", list(METHODS))
def test_sigkill_mid_epoch_then_resume_is_bit_identical(method, write_cfg, synthetic_dir, tmp_path,
                                                        teacher_file):
    script, path = config(write_cfg, synthetic_dir, str(tmp_path / "whole"), method, teacher_file)
    code, _, err = run_script(script, path)
    assert code == 0, err

    folder = str(tmp_path / "killed")
    script, path = config(write_cfg, synthetic_dir, folder, method, teacher_file)
    process = start_script(script, path)
    wait_for_epoch(folder, 1, process)
    time.sleep(0.3)  # into epoch 2
    process.kill()
    process.wait()
    assert load_checkpoint(os.path.join(folder, "latest.pth"))["epoch"] in (1, 2)
    code, out, err = run_script(script, path)
    assert code == 0, err
    assert "resuming after epoch" in out
    assert_same_weights(weights(str(tmp_path / "whole" / "resnet8_last.pth")),
                        weights(os.path.join(folder, "resnet8_last.pth")))
    whole = load_checkpoint(str(tmp_path / "whole" / "latest.pth"))["distiller"]
    resumed = load_checkpoint(os.path.join(folder, "latest.pth"))["distiller"]
    assert_same_weights(whole, resumed)  # CRD memory banks and Z, ASKD's 1x1 conv too
    if method == "recipe":  # the EMA's weights, and its best checkpoint
        for name in ("resnet8_ema_last.pth", "resnet8_ema_best.pth"):
            assert_same_weights(weights(str(tmp_path / "whole" / name)), weights(os.path.join(folder, name)))


def test_sigterm_stops_cleanly_and_keeps_the_last_epoch(write_cfg, synthetic_dir, tmp_path, teacher_file):
    folder = str(tmp_path / "run")
    script, path = config(write_cfg, synthetic_dir, folder, "teacher", teacher_file)
    process = start_script(script, path)
    wait_for_epoch(folder, 1, process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    state = load_checkpoint(os.path.join(folder, "latest.pth"))
    if state["epoch"] == 1:  # the signal landed inside epoch 2, as intended
        assert process.returncode == 128 + signal.SIGTERM, out
        assert "SIGTERM received" in out and "Traceback" not in out
        assert not state["finished"]
