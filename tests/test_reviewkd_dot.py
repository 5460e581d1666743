"""ReviewKD and DOT against figures measured on mdistiller (reference/losses_mdistiller_b.json):
ReviewKD's loss and its gradients w.r.t. the student's features, its warm-up, the per-pair
shapes it infers (mdistiller's SHAPES, OUT_SHAPES, IN_CHANNELS, OUT_CHANNELS), a short run;
DOT's update step by step, its exact resume, and the runs it refuses."""
import copy
import json
import os

import pytest
import torch

from common.errors import UserError
from distillers import build
from distillers.reviewkd import ReviewKD
from helper import distributed
from helper.checkpoint import load_checkpoint
from helper.config import get_cfg_defaults
from helper.dot import DOT
from helper.trainer import Trainer
from models import model_dict
from runs import assert_same_weights, run_script, tiny_config, weights
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses_mdistiller_b.json")))
CASES = {f"{c['teacher']}-{c['student']}": c for c in REF["reviewkd"]}


def reviewkd_cfg(**overrides):
    cfg = get_cfg_defaults("reviewkd")
    cfg.update(alpha=0.0, beta=1.0, **overrides)
    return cfg


def as_mdistiller_lists(levels):
    """[(student (C, H, W), teacher (C, H, W))] shallowest first -> mdistiller's four lists
    (channels shallowest first, sizes deepest first)."""
    return {"IN_CHANNELS": [s[0] for s, _ in levels], "OUT_CHANNELS": [t[0] for _, t in levels],
            "SHAPES": [s[1] for s, _ in levels][::-1], "OUT_SHAPES": [t[1] for _, t in levels][::-1]}


# -- ReviewKD ----------------------------------------------------------------------------------

def test_reviewkd_levels_are_mdistillers_per_pair_values():
    """Every pair of the reference, and the three pairs mdistiller lists itself (CIFAR's
    resnet32x4 -> resnet8x4, ImageNet's ResNet34 -> ResNet18 and ResNet50 -> MobileNetV1)."""
    listed = REF["reviewkd_listed_by_mdistiller"]
    assert CASES["resnet32x4-resnet8x4"]["per_pair"] == listed[
        "cifar100 resnet32x4 -> resnet8x4 (engine/cfg.py defaults)"]
    pairs = {(c["teacher"], c["student"]): c["per_pair"] for c in CASES.values()}
    pairs[("resnet34_imagenet", "resnet18_imagenet")] = listed[
        "imagenet ResNet34 -> ResNet18 (configs/imagenet/r34_r18/reviewkd.yaml)"]
    pairs[("resnet50_imagenet", "MobileNetV1")] = listed[
        "imagenet ResNet50 -> MobileNetV1 (configs/imagenet/r50_mv1/reviewkd.yaml)"]
    feats = {name: ReviewKD.probe_feats(model_dict[name](), batch=1) for name in sorted(set(sum(pairs, ())))}
    for (teacher, student), expected in pairs.items():
        assert as_mdistiller_lists(ReviewKD.levels(feats[student], feats[teacher])) == expected, (teacher, student)


@pytest.mark.parametrize("pair", ["resnet110-resnet20", "vgg13-MobileNetV2"])
def test_reviewkd_matches_mdistiller(pair):
    """Loss (warm-up factor 1, and 5/20 at epoch 5) and d loss / d student features, float64,
    deterministic weights, teacher eval (pre-activation features), student and ABFs train."""
    case = CASES[pair]
    teacher = fill_deterministic(model_dict[case["teacher"]](num_classes=100).double()).eval()
    student = fill_deterministic(model_dict[case["student"]](num_classes=100).double()).train()
    distiller = build(reviewkd_cfg(), student, teacher).double()
    assert list(distiller.abfs.state_dict()) == case["abf_keys"]
    levels = as_mdistiller_lists(ReviewKD.levels(*(ReviewKD.probe_feats(m) for m in (student, teacher))))
    assert [abf.conv1[0].in_channels for abf in reversed(distiller.abfs)] == levels["IN_CHANNELS"]
    assert [abf.conv2[0].out_channels for abf in reversed(distiller.abfs)] == levels["OUT_CHANNELS"]
    fill_deterministic(distiller.abfs)
    x, target = fixed_input(8), torch.arange(8) * 13 % 100
    with torch.no_grad():
        feats_t, logits_t = teacher(x, is_feat=True, preact=True)
        feats_s, logits_s = student(x, is_feat=True)
    feats_s = [f.clone().requires_grad_(True) for f in feats_s]

    def loss(epoch):
        distiller.start_epoch(epoch)
        return distiller.method_losses(feats_s, logits_s, feats_t, logits_t, target, None)["reviewkd"]

    full = loss(20)
    assert full.item() == pytest.approx(case["reviewkd_hcl"], rel=1e-6, abs=0)
    full.backward()
    with torch.no_grad():
        assert loss(5).item() == pytest.approx(case["warmup_epoch_5_of_20"], rel=1e-6, abs=0)
    for i, ref in case["grad_wrt_student_feats"].items():
        grad = feats_s[int(i)].grad
        if ref is None:
            assert grad is None, i  # a feature below the reviewed levels
            continue
        assert list(grad.shape) == ref["shape"]
        assert grad.norm().item() == pytest.approx(ref["norm"], rel=1e-5, abs=0)
        assert grad.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=1e-5, abs=0)
        assert grad.flatten()[:5].tolist() == pytest.approx(ref["first"], rel=1e-5, abs=0)


@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(0)
    return model_dict["resnet8"](num_classes=100), model_dict["resnet14"](num_classes=100)


def test_reviewkd_warmup_follows_the_epoch(small_pair):
    student, teacher = small_pair
    distiller = build(reviewkd_cfg(warmup_epochs=4), student, teacher)
    x, target = torch.randn(4, 3, 32, 32), torch.arange(4)
    with torch.no_grad():
        def loss(epoch):
            distiller.start_epoch(epoch)
            return distiller(x, target)[1]["reviewkd"].item()
        full = loss(4)
        assert full > 0
        for epoch in (1, 2, 3, 4, 9):
            assert loss(epoch) == pytest.approx(min(epoch / 4, 1) * full, rel=1e-6)
        no_warmup = build(reviewkd_cfg(warmup_epochs=0), student, teacher)
        no_warmup.load_state_dict(distiller.state_dict())
        no_warmup.start_epoch(1)
        assert no_warmup(x, target)[1]["reviewkd"].item() == pytest.approx(full, rel=1e-6)


def test_reviewkd_short_run_lowers_its_loss(small_pair):
    student, teacher = copy.deepcopy(small_pair)
    distiller = build(reviewkd_cfg(warmup_epochs=0), student, teacher)
    optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    x, target = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
    distiller.start_epoch(1)
    history = []
    for _ in range(5):
        losses = distiller(x, target)[1]
        history.append(losses["reviewkd"].item())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert all(later < earlier for earlier, later in zip(history, history[1:])), history
    assert history[-1] < 0.9 * history[0], history


def test_reviewkd_refusals(small_pair):
    student, teacher = small_pair
    short = [torch.zeros(2, 8, 4, 4), torch.zeros(2, 8)]
    with pytest.raises(UserError, match="deeper student"):
        ReviewKD.levels(short, ReviewKD.probe_feats(teacher))


# -- DOT ---------------------------------------------------------------------------------------

def test_dot_reproduces_mdistiller_step_by_step():
    """a: in both losses, b: in the distillation loss only, c: in the task loss only; the
    optimizer driven as the trainer drives it (Trainer.dot_backward)."""
    ref = REF["dot"]
    a, b, c = (torch.tensor(ref["initial"][k], dtype=torch.float64, requires_grad=True) for k in "abc")
    u, v = (torch.tensor(ref[k], dtype=torch.float64) for k in "uv")
    optimizer = DOT([a, b, c], ref["lr"], ref["momentum"], ref["delta"], ref["weight_decay"])
    for step in ref["params_after_step"]:
        task = 0.5 * (a - u).pow(2).sum() + (c * a[:2]).sum().pow(2) + 0.1 * c.pow(2).sum()
        distill = (a[:2] * b - v).pow(2).sum() + (a[2] * (b[0] + b[1])).pow(2)
        optimizer.zero_grad(set_to_none=True)
        Trainer.dot_backward(optimizer, {"ce": task, "kd": distill})
        for name, p in zip("abc", (a, b, c)):
            expected = torch.tensor(step[name], dtype=torch.float64)
            assert (p.detach() - expected).abs().max().item() <= 1e-12, (name, p, expected)
    state = optimizer.state_dict()["state"]
    assert set(state[0]) == {"task_buffer", "distill_buffer"}
    assert set(state[1]) == {"distill_buffer"} and set(state[2]) == {"task_buffer"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """128 training and 64 test images: 4 steps an epoch at batch 32."""
    from dataset.synthetic import write_synthetic_cifar100
    root = str(tmp_path_factory.mktemp("small_synthetic"))
    write_synthetic_cifar100(root, 128, 64)
    return root


def kd_dot_config(data_dir, folder, teacher_file, **extra):
    cfg = tiny_config(data_dir, folder, model_s="resnet8", model_t="resnet14", path_t=teacher_file,
                      distill="kd", gamma=0.1, alpha=0.9, optimizer="dot", synthetic_train_size=128,
                      synthetic_test_size=64, batch_size=32, **extra)
    if "model" not in extra:  # a student run
        cfg.pop("model")
    return cfg


def test_dot_resume_is_bit_identical(write_cfg, small_data, tmp_path, teacher_file):
    whole = kd_dot_config(small_data, str(tmp_path / "whole"), teacher_file, epochs=2)
    assert run_script("train_student.py", write_cfg(whole))[0] == 0
    part = kd_dot_config(small_data, str(tmp_path / "part"), teacher_file, epochs=1)
    assert run_script("train_student.py", write_cfg(part))[0] == 0
    code, out, err = run_script("train_student.py", write_cfg(dict(part, epochs=2)))
    assert code == 0, err
    assert "resuming after epoch 1" in out
    assert_same_weights(weights(str(tmp_path / "whole" / "resnet8_last.pth")),
                        weights(str(tmp_path / "part" / "resnet8_last.pth")))
    states = [load_checkpoint(str(tmp_path / run / "latest.pth"))["optimizer"]["state"] for run in ("whole", "part")]
    assert states[0].keys() == states[1].keys() and states[0]
    for index, buffers in states[0].items():
        assert set(buffers) == {"task_buffer", "distill_buffer"}  # the student is in CE and KD
        for name, value in buffers.items():
            assert torch.equal(value, states[1][index][name]), (index, name)


REFUSALS = {
    "cuda_graph": ("train_student.py", dict(cuda_graph=True, fast=True), "set cuda_graph false or optimizer sgd"),
    "amp fp16": ("train_student.py", dict(amp="fp16"), "use amp bf16 or off"),
    "teacher script": ("train_teacher.py", dict(model="resnet8"), "a teacher has no distillation loss"),
    "dot_delta too large": ("train_student.py", dict(dot_delta=0.2), "dot_delta"),
    "task momentum 0": ("train_student.py", dict(dot_delta=0.3, momentum=0.3), "0 <= dot_delta < momentum"),
    "DDP": ("train_student.py", {}, "run one process or set optimizer sgd"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_dot_refusals_through_the_scripts(case, small_data, tmp_path, write_cfg, teacher_file, monkeypatch):
    script, extra, expected = REFUSALS[case]
    if case == "DDP":  # two ranks as torchrun would start them, without the process group
        monkeypatch.setattr(distributed, "init", lambda *args: distributed.Context(0, 2, 0))
    run = tmp_path / "run"
    code, out, err = run_script(script, write_cfg(kd_dot_config(small_data, str(run), teacher_file, **extra)))
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err and "optimizer dot" in err
    assert not run.exists()
