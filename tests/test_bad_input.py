"""Bad input through the real scripts: one `error:` line, no traceback, exit 2, and nothing
written (a failed run creates no run folder and touches no earlier file).

Together with the config cases of test_config.py, the distiller cases of test_distillers.py
and the checkpoint cases of test_checkpoint.py, these cover the list of issue 5."""
import os

import pytest
import torch

from models import model_dict
from runs import run_script, tiny_config


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    for name in ("resnet14", "resnet20", "wrn_40_2"):
        torch.save({"model": model_dict[name](num_classes=100).state_dict()}, folder / f"{name}.pth")
    (folder / "empty.pth").write_bytes(b"")
    whole = (folder / "resnet14.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (folder / "a_directory.pth").mkdir()
    return folder


def student_cfg(synthetic_dir, run, teachers, **extra):
    cfg = tiny_config(synthetic_dir, str(run), model_s="resnet8", model_t="resnet14",
                      path_t=str(teachers / "resnet14.pth"), distill="ASKD", beta=1.0)
    cfg.pop("model")
    cfg.update(extra)
    return cfg


CASES = {
    "missing path_t file": (dict(path_t="/nonexistent/resnet14.pth"), "/nonexistent/resnet14.pth"),
    "teacher of another architecture": (dict(path_t="{t}/resnet20.pth"), "resnet20"),
    "empty teacher file": (dict(path_t="{t}/empty.pth"), "empty.pth"),
    "truncated teacher file": (dict(path_t="{t}/truncated.pth"), "truncated.pth"),
    "directory as teacher file": (dict(path_t="{t}/a_directory.pth"), "a_directory.pth"),
    "FSP on unequal channels": (dict(model_t="wrn_40_2", model_s="wrn_16_1", path_t="{t}/wrn_40_2.pth",
                                     distill="fsp"), "channel"),
    "hint_layer out of range": (dict(distill="hint", hint_layer=9), "hint_layer"),
    "ASKD target layer out of range": (dict(group="target", layer=7), "layer"),
    "nce_k above the negatives": (dict(distill="crd", nce_k=100000), "nce_k"),
    "unknown method": (dict(distill="ASKDD"), "unknown method"),
    "unknown model": (dict(model_s="resnet9"), "unknown model"),
    "misspelt key": (dict(learning_rat=0.1), "did you mean 'learning_rate'"),
    "decay beyond epochs": (dict(lr_decay_epochs="5"), "beyond epochs"),
    "unwritable save_folder": (dict(save_folder="/proc/askd_cannot_write/run"), "cannot write"),
    "cuda_graph without fast": (dict(cuda_graph=True), "set fast true"),
    "cuda_graph with fp16": (dict(cuda_graph=True, fast=True, amp="fp16"), "amp bf16 or off"),
    "cuda_graph on the CPU": (dict(cuda_graph=True, fast=True), "set cuda_graph false"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_student_script_rejects(case, synthetic_dir, teachers, tmp_path, write_cfg):
    extra, expected = CASES[case]
    extra = {k: v.format(t=teachers) if isinstance(v, str) else v for k, v in extra.items()}
    run = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(student_cfg(synthetic_dir, run, teachers, **extra)))
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in out + err
    assert not run.exists()


def test_a_failed_run_leaves_an_earlier_run_untouched(synthetic_dir, teachers, tmp_path, write_cfg):
    run = tmp_path / "run"
    assert run_script("train_student.py", write_cfg(student_cfg(synthetic_dir, run, teachers, epochs=1,
                                                                lr_decay_epochs="1")))[0] == 0
    before = {name: (run / name).read_bytes() for name in os.listdir(run) if name.endswith((".pth", ".yaml", ".txt"))}
    code, _, err = run_script("train_student.py", write_cfg(student_cfg(
        synthetic_dir, run, teachers, epochs=1, lr_decay_epochs="1", path_t=str(teachers / "truncated.pth"))))
    assert code == 2 and "truncated.pth" in err
    after = {name: (run / name).read_bytes() for name in before}
    assert after == before


def test_empty_config_and_yaml_error_through_the_script(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code, _, err = run_script("train_teacher.py", str(empty))
    assert code == 2 and "empty" in err and err.count("\n") == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: resnet8\nepochs: [2\n")
    code, _, err = run_script("train_teacher.py", str(broken))
    assert code == 2 and "line 2" in err and "Traceback" not in err
