"""VID, PKT, NST and KDSVD: values and student-feature gradients against the figures measured on
the original code (reference/losses_repdistiller_a.json), one training step (only the student and
the method's own modules move), each term going down on a fixed batch, and the refusals."""
import json
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from distillers import METHODS, build
from helper.config import load_config
from helper.session import check_method
from helper.trainer import Trainer
from models import model_dict
from runs import make_cfg
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference",
                                  "losses_repdistiller_a.json")))["cases"]
VALUE, GRAD = dict(rel=1e-6, abs=0), dict(rel=1e-5, abs=0)
# method -> (term, reference key, the paper's beta)
METHOD = {"vid": ("vid", "vid_feats_1_to_-1", 1.0), "pkt": ("pkt", "pkt_feat_-1", 30000.0),
          "nst": ("nst", "nst_feats_1_to_-1", 50.0), "kdsvd": ("kdsvd", "kdsvd_feats_1_to_-1", 1.0)}


@pytest.fixture(scope="module")
def zoo():
    """name -> (model, feats, logits) of one forward of fixed_input(8) in float64, each model
    filled once; teachers in eval mode, students in train mode (as the figures were measured)."""
    teachers, cache = {case["teacher"] for case in REF}, {}

    def get(name):
        if name not in cache:
            model = fill_deterministic(model_dict[name](num_classes=100).double())
            model.train(name not in teachers)
            with torch.no_grad():
                cache[name] = (model, *model(fixed_input(8), is_feat=True))
        return cache[name]
    return get


@pytest.mark.parametrize("case", REF, ids=[f"{c['teacher']}-{c['student']}" for c in REF])
def test_values_and_gradients_match_the_original(case, zoo):
    target = torch.tensor(case["labels"])
    teacher, feats_t, logits_t = zoo(case["teacher"])
    student, feats_s, logits_s = zoo(case["student"])
    checked = set()
    for name, (term, key, _) in METHOD.items():
        if key in case.get("original_raises", {}):
            with pytest.raises(UserError, match="KDSVD needs equal channel counts"):
                build(make_cfg(name), student, teacher)
            continue
        distiller = build(make_cfg(name), student, teacher).double()
        if name == "vid":
            assert list(distiller.regressors.state_dict()) == case["vid_module_keys"]
            fill_deterministic(distiller.regressors)
        leaves = [f.detach().clone().requires_grad_() for f in feats_s]
        terms = distiller.method_losses(leaves, logits_s, feats_t, logits_t, target, None)
        assert set(terms) == {term}
        assert terms[term].item() == pytest.approx(case["values"][key], **VALUE), key
        used = sorted(case["grads"][key], key=int)
        grads = torch.autograd.grad(terms[term], [leaves[int(i)] for i in used])
        for i, grad in zip(used, grads):
            ref = case["grads"][key][i]
            assert list(grad.shape) == ref["shape"]
            assert grad.sum().item() == pytest.approx(ref["sum"], **GRAD), (key, i)
            assert grad.norm().item() == pytest.approx(ref["norm"], **GRAD), (key, i)
            assert grad.flatten()[:4].tolist() == pytest.approx(ref["first4"], **GRAD), (key, i)
        checked.add(key)
    assert checked == set(case["values"])


def test_vid_variance_starts_at_init_pred_var():
    student, teacher = small_pair()
    distiller = build(make_cfg("vid"), student, teacher)
    assert [tuple(r.regressor[0].weight.shape[:2]) for r in distiller.regressors] == \
        [(16, 16), (32, 32), (64, 64)]
    for regressor in distiller.regressors:
        variance = F.softplus(regressor.log_scale.double()) + regressor.eps
        assert torch.allclose(variance, torch.full_like(variance, 5.0), rtol=1e-6, atol=0)
        assert [type(m) for m in regressor.regressor] == [nn.Conv2d, nn.ReLU] * 2 + [nn.Conv2d]
        assert all(m.bias is None for m in regressor.regressor if isinstance(m, nn.Conv2d))


# -- training ---------------------------------------------------------------------------------

def small_pair():
    torch.manual_seed(0)
    return model_dict["resnet8"](num_classes=100), model_dict["resnet14"](num_classes=100)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", list(METHOD))
def test_one_step_moves_only_the_student_and_the_method_modules(name):
    student, teacher = small_pair()
    distiller = build(make_cfg(name, alpha=0.0, beta=1.0), student, teacher).train()
    own = {n: m for n, m in distiller.named_children() if n != "student"}
    assert set(own) == ({"regressors"} if name == "vid" else set())
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in distiller.parameters()}
    teacher_before, student_before = snapshot(teacher), snapshot(student)
    own_before = {n: snapshot(m) for n, m in own.items()}
    gen = torch.Generator().manual_seed(1)
    image, target = torch.randn(4, 3, 32, 32, generator=gen), torch.tensor([3, 50, 11, 99])
    optimizer = torch.optim.SGD(distiller.parameters(), lr=0.1)
    _, losses = distiller(image, target)
    assert set(losses) == {"ce", METHOD[name][0]}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert not changed(teacher_before, teacher)            # weights and BN statistics
    for p in distiller.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert changed(student_before, student)
    for n, module in own.items():
        assert changed(own_before[n], module), n


@pytest.mark.parametrize("name", list(METHOD))
def test_a_short_run_lowers_the_method_loss(name, write_cfg):
    """Fifteen steps on one fixed batch of 8, on the method's term alone (gamma 0, the paper's beta)."""
    cfg = load_config(write_cfg(dict(model_s="resnet8", model_t="resnet14", path_t="unused", distill=name,
                                     gamma=0.0, alpha=0.0, beta=METHOD[name][2], learning_rate=0.02,
                                     epochs=1, lr_decay_epochs="1")), script="student")
    student, teacher = small_pair()
    distiller = build(cfg, student, teacher)
    trainer = Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    batch = torch.randn(8, 3, 32, 32, generator=gen), torch.arange(8) * 7 % 100, torch.arange(8)
    term = METHOD[name][0]
    first = trainer.step(trainer.optimizer, distiller, *batch)[1][term].item()
    for _ in range(15):
        last = trainer.step(trainer.optimizer, distiller, *batch)[1][term].item()
    assert math.isfinite(first) and last < first, (first, last)


@pytest.mark.parametrize("name", ["vid", "nst", "kdsvd"])
def test_one_sample_is_enough_for_the_per_sample_losses(name):
    student, teacher = small_pair()
    distiller = build(make_cfg(name, beta=1.0), student, teacher).train()
    assert distiller.min_batch == 1
    _, losses = distiller(torch.randn(1, 3, 32, 32), torch.tensor([5]))
    assert torch.isfinite(losses[METHOD[name][0]])


# -- refusals ---------------------------------------------------------------------------------

class Maps(nn.Module):
    """A model whose feats are one map per stride in `strides`, then the pooled vector."""

    def __init__(self, strides):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, stride=s, padding=1)
                                   for i, s in enumerate(strides))
        self.fc = nn.Linear(4, 10)

    def forward(self, x, is_feat=False, preact=False):
        feats = []
        for conv in self.convs:
            x = F.relu(conv(x))
            feats.append(x)
        pooled = x.mean((2, 3))
        logits = self.fc(pooled)
        return (feats + [pooled], logits) if is_feat else logits


def test_pkt_needs_two_samples():
    assert METHODS["pkt"].min_batch == 2
    with pytest.raises(UserError, match="method 'pkt' compares the samples.*set batch_size 2 or more"):
        check_method(make_cfg("pkt", batch_size=1), 1)


def test_kdsvd_refuses_unequal_channels_and_a_single_map():
    with pytest.raises(UserError, match=r"KDSVD needs equal channel counts.*\[16, 32, 64\].*\[64, 128, 256\]"):
        build(make_cfg("kdsvd"), model_dict["resnet8"](num_classes=100),
              model_dict["resnet8x4"](num_classes=100))
    with pytest.raises(UserError, match="KDSVD compares consecutive maps and needs at least 2.*got 1"):
        build(make_cfg("kdsvd"), Maps([1, 2]), Maps([1, 2]))
    build(make_cfg("kdsvd"), Maps([1, 2, 2]), Maps([1, 2, 2]))


def test_nst_refuses_one_by_one_maps():
    with pytest.raises(UserError, match=r"NST needs maps of at least 2 positions.*\(4, 1, 1\)"):
        build(make_cfg("nst"), Maps([1, 32, 1]), Maps([1, 2, 2]))
    build(make_cfg("nst"), Maps([1, 16, 1]), Maps([1, 2, 2]))
