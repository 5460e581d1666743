"""MLKD against its original (reference/losses_logit_b.json): the strong view's transform on a fixed
image with fixed seeds, every loss term and its gradients with respect to the student's weak and
strong logits (with and without logit standardisation), and the loop's two-view batches."""
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import cifar100
from dataset.strong_view import TwoViews, collate_views
from distillers import build
from models import model_dict
from runs import make_cfg
from test_logit_methods import assert_grad
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses_logit_b.json")))
VALUE = dict(rel=1e-6, abs=0)


def test_the_strong_view_draws_what_the_original_draws():
    view = REF["mlkd_strong_view"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    two = TwoViews(cifar100.train_transform())
    randaugment = next(t for t in two.strong.transforms if hasattr(t, "last"))
    for run in view["runs"]:
        seed = run["seed"]
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        weak, strong = two(image)
        drawn = [(op["op"], op["value"]) for op in run["ops"]]
        assert [name for name, _ in randaugment.last] == [name for name, _ in drawn]
        assert [v for _, v in randaugment.last] == pytest.approx([v for _, v in drawn], rel=1e-12)
        for got, ref in ((weak, run["weak"]), (strong, run["strong"])):
            assert list(got.shape) == ref["shape"]
            assert got.double().sum().item() == pytest.approx(ref["sum"], rel=1e-6)
            assert got.flatten()[:len(ref["first"])].tolist() == pytest.approx(ref["first"], rel=1e-6)


def test_two_view_batches_hold_the_weak_views_then_the_strong():
    images = [torch.full((2, 3, 4, 4), float(i)) for i in range(3)]
    images = [torch.stack([x[0], -x[1]]) for x in images]
    batch, target, index = collate_views([(x, i, i) for i, x in enumerate(images)])
    assert batch.shape == (6, 3, 4, 4) and target.tolist() == [0, 1, 2]
    assert batch[:, 0, 0, 0].tolist() == [0, 1, 2, -0.0, -1, -2]


@pytest.fixture(scope="module")
def logits():
    """name -> (weak logits, strong logits), float64, deterministic weights, teachers in eval mode."""
    cases = REF["cases"]
    teachers = {c["teacher"] for c in cases}
    strong_input = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = {}
    with torch.no_grad():
        for name in sorted(teachers | {c["student"] for c in cases}):
            views = []
            for x in (fixed_input(8), strong_input):  # a fresh fill for each input, as measured
                model = fill_deterministic(model_dict[name](num_classes=100).double())
                views.append(model.train(name not in teachers)(x))
            out[name] = tuple(views)
    return out


def mlkd(**knobs):
    model = model_dict["resnet8"](num_classes=100)
    return build(make_cfg("mlkd", **knobs), model, model_dict["resnet8"](num_classes=100)).double()


def test_the_shares_follow_the_logits_dtype():
    """Over 7 samples and 100 classes the shares (4/7 of the samples, 1/2 of the classes here) are
    not exact in float32: in float64 the terms carry the float64 share, as the original's
    `(loss * mask).mean()` does."""
    from distillers.mlkd import correlation_gap
    gen = torch.Generator().manual_seed(0)
    s_w, s_s, t_w, t_s = (torch.randn(7, 100, generator=gen, dtype=torch.float64) for _ in range(4))
    terms = mlkd(gamma=0.1, beta=0.9, kd_T=4.0).method_losses((s_w, s_s), (t_w, t_s), torch.arange(7))
    p_t = torch.softmax(t_w, dim=1)
    confidence = p_t.max(dim=1).values
    share = (confidence <= confidence.median()).sum().item() / 7
    assert share == 4 / 7
    gaps = sum(correlation_gap(torch.softmax(s_w / T, dim=1), torch.softmax(t_w / T, dim=1), 1)
               for T in (4.0, 3.0, 5.0, 2.0, 6.0))
    assert terms["mlkd_bc"].item() / gaps.item() == pytest.approx(share, rel=1e-14, abs=0)


@pytest.mark.parametrize("case", REF["cases"], ids=lambda c: f"{c['teacher']}-{c['student']}")
@pytest.mark.parametrize("standardised", [False, True], ids=["plain", "logit_stand"])
def test_mlkd_matches_the_original(case, logits, standardised):
    if standardised:  # the logit-standardisation fork's MLKD: T 2, KD weight 9, CE weight 0.1
        ref = case["logit_stand"]["mlkd_forward_train"]
        distiller = mlkd(gamma=0.1, beta=9.0, kd_T=2.0, logit_stand=True)
    else:  # the engine's CFG: T 4, CE 0.1, KD 0.9
        ref = case["mlkd"]
        distiller = mlkd(gamma=0.1, beta=0.9, kd_T=4.0)
    weak, strong = (x.clone().requires_grad_() for x in logits[case["student"]])
    target = torch.tensor(case["labels"])
    ce = distiller.gamma * (torch.nn.functional.cross_entropy(weak, target) +
                            torch.nn.functional.cross_entropy(strong, target))
    terms = distiller.method_losses((weak, strong), logits[case["teacher"]], target)
    ours = {"loss_ce": ce, **{f"loss_{k[5:]}": distiller.beta * v for k, v in terms.items()}}
    assert set(ours) == set(ref["losses"])
    for key, value in ours.items():
        assert value.item() == pytest.approx(ref["losses"][key], **VALUE), key
        for view, tensor in (("weak", weak), ("strong", strong)):
            grad, = torch.autograd.grad(value, tensor, retain_graph=True, allow_unused=True)
            expected = ref["grads"][key][view]
            if expected is None:
                assert grad is None or not grad.any(), (key, view)
            else:
                assert_grad(grad, expected)
    assert sum(ours.values()).item() == pytest.approx(ref["total"], **VALUE)
