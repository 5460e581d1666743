"""The fast path computes what the plain path computes: the same batch from both data paths,
the same loss and gradients from one step (fp32 within 1e-5; bf16 within the tolerance below),
and a whole `fast True` run through the script."""
import copy

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dataset import cifar100
from dataset.cifar100 import read_split
from dataset.device_loader import crop_flip, normalize
from distillers import build
from helper.config import load_config
from helper.trainer import Trainer
from models import model_dict
from runs import run_script, tiny_config

# bf16 keeps 8 bits of mantissa: a step's loss within 2% and its gradient pointing the same way
# (cosine > 0.99) is what autocast is expected to give; fp32 must agree to 1e-5.
BF16_LOSS_RTOL, BF16_GRAD_COSINE = 0.02, 0.99


def plain_batch(images, dy, dx, flip):
    """torchvision's pipeline at fixed offsets: pad 4, crop, flip, ToTensor, Normalize."""
    out = []
    for image, y, x, f in zip(images, dy.tolist(), dx.tolist(), flip.tolist()):
        pil = TF.crop(TF.pad(Image.fromarray(image), 4), y, x, 32, 32)
        out.append(cifar100.test_transform()(TF.hflip(pil) if f else pil))
    return torch.stack(out)


@pytest.fixture(scope="module")
def batch(synthetic_dir):
    images, targets = read_split(synthetic_dir, "train")
    images, targets = images[:16], torch.as_tensor(targets[:16])
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    fast = normalize(crop_flip(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), dy, dx, flip))
    plain = plain_batch(images, dy, dx, flip)
    return plain, fast, targets


def test_both_data_paths_give_the_same_batch(batch):
    plain, fast, _ = batch
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=0)


def one_step(method, batch_images, targets, write_cfg, **overrides):
    cfg = load_config(write_cfg(dict(model_s="resnet8", model_t="resnet14", path_t="unused", distill=method,
                                     alpha=0.9 if method == "kd" else 0.0, beta=0.0 if method == "kd" else 1.0,
                                     epochs=1, lr_decay_epochs="1", **overrides)), script="student")
    torch.manual_seed(0)
    teacher, student = model_dict["resnet14"](num_classes=100), model_dict["resnet8"](num_classes=100)
    if cfg.channels_last:
        teacher, student = (m.to(memory_format=torch.channels_last) for m in (teacher, student))
    distiller = build(cfg, student, teacher, targets)
    trainer = Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))
    # keep the gradients: zero them before the step, read them after (SGD with lr 0 moves nothing)
    for group in trainer.optimizer.param_groups:
        group["lr"], group["weight_decay"], group["momentum"] = 0.0, 0.0, 0.0
    _, _, loss = trainer.step(trainer.optimizer, distiller, batch_images, targets, torch.arange(len(targets)))
    grads = torch.cat([p.grad.flatten() for p in distiller.parameters() if p.grad is not None])
    return loss.item(), grads


@pytest.mark.parametrize("method", ["kd", "ASKD"])
def test_fast_fp32_step_equals_the_plain_step(method, batch, write_cfg):
    plain, fast, targets = batch
    loss_plain, grad_plain = one_step(method, plain, targets, write_cfg)
    loss_fast, grad_fast = one_step(method, fast, targets, write_cfg, fast=True, channels_last=True)
    assert loss_fast == pytest.approx(loss_plain, rel=1e-5, abs=1e-5)
    torch.testing.assert_close(grad_fast, grad_plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["kd", "ASKD"])
def test_bf16_step_is_within_the_documented_tolerance(method, batch, write_cfg):
    plain, fast, targets = batch
    loss_plain, grad_plain = one_step(method, plain, targets, write_cfg)
    loss_bf16, grad_bf16 = one_step(method, fast, targets, write_cfg, fast=True, amp="bf16")
    assert loss_bf16 == pytest.approx(loss_plain, rel=BF16_LOSS_RTOL)
    assert torch.nn.functional.cosine_similarity(grad_bf16, grad_plain, dim=0) > BF16_GRAD_COSINE


def test_a_fast_run_trains(write_cfg, synthetic_dir, tmp_path):
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), fast=True, amp="bf16", channels_last=True)
    code, out, err = run_script("train_teacher.py", write_cfg(cfg))
    assert code == 0, err
    lines = [line.split() for line in open(tmp_path / "run" / "log.txt") if line.startswith("epoch ")]
    assert len(lines) == 2
    loss = [float(line[line.index("train_loss") + 1]) for line in lines]
    assert loss[1] < loss[0]
    # 600 images in batches of 64, the last partial batch dropped: 9 steps of 64
    assert "[9/9]" in out


def test_fast_resume_is_bit_identical(write_cfg, synthetic_dir, tmp_path):
    from runs import assert_same_weights, weights
    base = dict(fast=True, epochs=2, lr_decay_epochs="1")
    whole = tiny_config(synthetic_dir, str(tmp_path / "whole"), **base)
    assert run_script("train_teacher.py", write_cfg(whole))[0] == 0
    part = tiny_config(synthetic_dir, str(tmp_path / "part"), **dict(base, epochs=1, lr_decay_epochs="1"))
    assert run_script("train_teacher.py", write_cfg(part))[0] == 0
    # the same run, continued to 2 epochs (epochs may grow on resume; the schedule is the same)
    rest = copy.deepcopy(part)
    rest.update(epochs=2)
    code, _, err = run_script("train_teacher.py", write_cfg(rest))
    assert code == 0, err
    assert_same_weights(weights(str(tmp_path / "whole" / "resnet8_last.pth")),
                        weights(str(tmp_path / "part" / "resnet8_last.pth")))


def test_cuda_graph_optimizer_takes_the_plain_steps_and_swaps_states_with_it(batch, write_cfg):
    """`cuda_graph True` trains with fused SGD reading its learning rate from a tensor (what a
    captured graph can follow). Run eagerly here (no CUDA), it must take the plain optimizer's
    steps through a learning-rate change, and a resumed state must work both ways."""
    _, fast, targets = batch
    trainers = []
    for graph in (False, True):
        cfg = load_config(write_cfg(dict(model="resnet8", fast=True, cuda_graph=graph, epochs=2,
                                         lr_decay_epochs="1")), script="teacher")
        torch.manual_seed(0)
        distiller = build(cfg, model_dict["resnet8"](num_classes=100), None, targets)
        trainers.append(Trainer(cfg, distiller, None, None, None, None, torch.device("cpu")))
    plain, graphed = trainers
    for lr in (0.05, 0.005):
        for t in trainers:
            t.set_lr(lr)
            t.step(t.optimizer, t.distiller, fast, targets, torch.arange(len(targets)))
    assert graphed.optimizer.param_groups[0]["lr"] is graphed.lr and graphed.lr.item() == pytest.approx(0.005)
    for a, b in zip(plain.distiller.parameters(), graphed.distiller.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)

    def state(t):
        return {"distiller": t.distiller.state_dict(), "optimizer": t.optimizer.state_dict(),
                "best_acc": 0.0, "epoch": 1, "init_done": 0}
    saved_plain, saved_graphed = state(plain), state(graphed)
    graphed.restore(saved_plain)
    plain.restore(saved_graphed)
    for t in trainers:
        t.set_lr(0.0005)
    assert graphed.optimizer.param_groups[0]["lr"] is graphed.lr and graphed.optimizer.param_groups[0]["fused"]
    assert plain.optimizer.param_groups[0]["lr"] == 0.0005 and not plain.optimizer.param_groups[0]["fused"]
