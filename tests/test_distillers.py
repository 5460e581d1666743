"""The distillers: every loss against the original's figures (reference/losses.json), one
training step of every method (only the student and the method's modules move; the teacher,
its BN statistics included, stays bit-identical and outside the module tree), the loss weights,
the registry and the user errors."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import distillers
from distillers import build, distiller_names
from distillers.functional import (correlation_loss, distance_structure_loss, fsp_loss, hinton_kd,
                                   region_structure_loss)
from common.errors import UserError
from models import model_dict
from runs import make_cfg
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses.json")))
CLOSE = dict(rel=1e-6, abs=0)


# -- the reference figures: float64, deterministic weights, teacher eval, student train ------

@pytest.fixture(scope="module")
def zoo():
    """name -> (model, feats, logits) of one forward of fixed_input(8); teachers in eval mode
    (every reference teacher is only a teacher), students in train mode."""
    teachers = {case["teacher"] for case in REF}
    cache = {}
    x = fixed_input(8)
    with torch.no_grad():
        for name in sorted(teachers | {case["student"] for case in REF}):
            model = fill_deterministic(model_dict[name](num_classes=100).double())
            model.train(name not in teachers)
            feats, logits = model(x, is_feat=True)
            cache[name] = model, feats, logits
    return cache


@pytest.mark.parametrize("case", REF, ids=[f"{c['teacher']}-{c['student']}" for c in REF])
def test_losses_match_reference(zoo, case):
    teacher, feats_t, logits_t = zoo[case["teacher"]]
    student, feats_s, logits_s = zoo[case["student"]]
    ref = case["losses"]
    target = torch.tensor(case["labels"])
    assert target.tolist() == (torch.arange(8) * 13 % 100).tolist()

    def method(name, **overrides):
        distiller = build(make_cfg(name, **overrides), student, teacher).double()
        with torch.no_grad():
            return distiller, distiller.method_losses(feats_s, logits_s, feats_t, logits_t, target, None)

    got = {"ce": F.cross_entropy(logits_s, target).item(),
           "kd_T4": hinton_kd(logits_s, logits_t, make_cfg("kd").kd_T).item(),
           "at_p2_feats_1_to_-1": method("attention")[1]["at"].item(),
           "sp_feat_-2": method("similarity")[1]["sp"].item()}
    rkd = method("rkd")[1]
    got["rkd_feat_-1"] = (rkd["rkd_distance"] + rkd["rkd_angle"]).item()
    assert method("kd")[1] == {}
    # ASKD through the distiller, its 1x1 conv filled alone (keys `weight`, `bias`)
    askd = build(make_cfg("ASKD", r=case["r"], w_rs=1.0, w_cs=1.0), student, teacher).double()
    assert len(askd.adapters) == 1
    fill_deterministic(askd.adapters[0])
    with torch.no_grad():
        terms = askd.method_losses(feats_s, logits_s, feats_t, logits_t, target, None)
    got["askd_cs_logits"] = terms["askd_cs"].item()
    got["askd_rs_adapted_feat_-2"] = terms["askd_rs"].item()
    # CC without its embeddings: only where both last features have the same width
    same_width = feats_s[-1].shape == feats_t[-1].shape
    assert ("cc_feat_-1_no_embed" in ref) == same_width
    if same_width:
        got["cc_feat_-1_no_embed"] = correlation_loss(feats_s[-1], feats_t[-1]).item()
    # FSP: a figure exactly where the channel counts match, else the build refuses the pair
    if "fsp_feats_:-1" in ref:
        build(make_cfg("fsp"), student, teacher)
        got["fsp_feats_:-1"] = fsp_loss(feats_s[:-1], feats_t[:-1]).item()
    else:
        with pytest.raises(UserError, match="FSP needs equal channel counts"):
            build(make_cfg("fsp"), student, teacher)
    assert set(got) == set(ref)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, **CLOSE), key


# -- one training step of every method on a small pair ----------------------------------------

TERMS = {
    "vanilla": set(), "kd": set(), "hint": {"hint"}, "attention": {"at"},
    "similarity": {"sp"}, "correlation": {"cc"}, "rkd": {"rkd_distance", "rkd_angle"},
    "fsp": set(), "crd": {"crd"}, "ASKD": {"askd_rs", "askd_cs"},
}
TRAIN_TARGETS = torch.arange(200) % 10


def small_pair(seed=0):
    torch.manual_seed(seed)
    return model_dict["resnet8"](num_classes=100), model_dict["resnet20"](num_classes=100)


def batch():
    gen = torch.Generator().manual_seed(1)
    index = torch.tensor([3, 50, 111, 199])
    return torch.randn(4, 3, 32, 32, generator=gen), TRAIN_TARGETS[index], index


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(before, module):
    after = module.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_every_method_is_registered():
    names = distiller_names()
    for name in TERMS:
        assert name in names
    for alias, name in [("hkd", "kd"), ("fitnet", "hint"), ("at", "attention"),
                        ("sp", "similarity"), ("cc", "correlation"), ("askd", "ASKD")]:
        assert distillers.METHODS[alias] is distillers.METHODS[name]
    # (the methods added after the paper's nine are checked in their own test files)


def test_fsp_init_stage_trains_only_the_feature_modules():
    student, teacher = small_pair()
    distiller = build(make_cfg("fsp"), student, teacher)
    modules, compute = distiller.init_stage()[:2]
    feat_params = {id(p) for p in modules.parameters()}
    assert feat_params <= {id(p) for p in student.parameters()}
    assert not {id(p) for p in student.fc.parameters()} & feat_params
    teacher_before, fc_before = snapshot(teacher), snapshot(student.fc)
    feat_before = snapshot(modules)
    optimizer = torch.optim.SGD(modules.parameters(), lr=0.1)
    distiller.train()
    losses = compute(*batch())
    assert set(losses) == {"fsp"} and losses["fsp"].item() > 0
    optimizer.zero_grad()
    losses["fsp"].backward()
    optimizer.step()
    assert_same(teacher_before, teacher)
    assert_same(fc_before, student.fc)
    assert any(not torch.equal(v, modules.state_dict()[k]) for k, v in feat_before.items())
    # the main training adds no FSP term
    image, target, index = batch()
    _, main = distiller(image, target, index)
    assert set(main) == {"ce"}


def test_weights_gamma_alpha_beta_and_internal_weights():
    student, teacher = small_pair()
    cfg = make_cfg("ASKD", gamma=0.5, alpha=0.7, beta=2.0, w_rs=5.0, w_cs=14.0, r=2)
    distiller = build(cfg, student, teacher).train()
    image, target, index = batch()
    logits, losses = distiller(image, target, index)
    with torch.no_grad():
        feats_s, logits_s = student(image, is_feat=True)  # train-mode BN: the same batch output
        feats_t, logits_t = teacher(image, is_feat=True)
        assert torch.allclose(logits_s, logits)
        expected = {
            "ce": 0.5 * F.cross_entropy(logits_s, target),
            "kd": 0.7 * hinton_kd(logits_s, logits_t, 4.0),
            "askd_rs": 2.0 * 5.0 * region_structure_loss(distiller.adapters[0](feats_s[-2]),
                                                         feats_t[-2], 2),
            "askd_cs": 2.0 * 14.0 * distance_structure_loss(logits_s, logits_t, dim=1),
        }
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-5), key
    # zero weights leave their terms out
    _, losses = build(make_cfg("ASKD", alpha=0.0, beta=1.0, w_cs=0.0), student, teacher)(image, target)
    assert set(losses) == {"ce", "askd_rs"}
    no_region = build(make_cfg("ASKD", beta=1.0, w_rs=0.0), student, teacher)
    assert len(no_region.adapters) == 0 and set(no_region(image, target)[1]) == {"ce", "askd_cs"}
    _, losses = build(make_cfg("rkd", alpha=0.0, beta=0.0), student, teacher)(image, target)
    assert set(losses) == {"ce"}


def test_askd_groups_pick_the_maps_of_the_original():
    """res_last is feats[-2] of each model (ResNet18 has one map more than resnet8), res_group
    feats[1:-1] paired by position, target feats[layer]."""
    student, teacher = model_dict["resnet8"](num_classes=100), model_dict["ResNet18"](num_classes=100)

    def adapters(**cfg):
        return [tuple(a.weight.shape[:2]) for a in build(make_cfg("ASKD", **cfg), student, teacher).adapters]
    assert adapters() == [(512, 64)]
    assert adapters(group="res_group") == [(64, 16), (128, 32), (256, 64)]
    assert adapters(group="target", layer=0) == [(64, 16)]


@pytest.mark.parametrize("s_shape,t_shape,conv,kernel", [
    ((2, 16, 32, 32), (2, 64, 16, 16), torch.nn.Conv2d, (3, 3)),           # student twice
    ((2, 16, 8, 8), (2, 64, 16, 16), torch.nn.ConvTranspose2d, (4, 4)),    # student half
    ((2, 16, 8, 8), (2, 64, 8, 8), torch.nn.Conv2d, (1, 1)),
    ((2, 16, 8, 8), (2, 64, 5, 5), torch.nn.Conv2d, (4, 4)),               # 1 + s_H - t_H
])
def test_fitnet_regressor_matches_the_teacher_map(s_shape, t_shape, conv, kernel):
    from distillers.fitnet import ConvReg
    regressor = ConvReg(s_shape, t_shape)
    assert type(regressor.conv) is conv and regressor.conv.kernel_size == kernel
    out = regressor(torch.randn(s_shape))
    assert out.shape == t_shape and (out >= 0).all()                       # conv, BN, ReLU
    with pytest.raises(UserError, match="hint_layer"):
        ConvReg((2, 16, 4, 4), (2, 64, 16, 16))


# -- user errors ------------------------------------------------------------------------------

def test_unknown_method_lists_the_valid_names():
    student, teacher = small_pair()
    with pytest.raises(UserError, match="unknown method 'foo'") as err:
        build(make_cfg("foo"), student, teacher)
    for name in ("kd", "hint", "attention", "similarity", "correlation", "rkd", "fsp", "crd",
                 "ASKD", "vanilla"):
        assert name in str(err.value)


def test_method_without_teacher():
    student, _ = small_pair()
    with pytest.raises(UserError, match="needs a teacher"):
        build(make_cfg("kd"), student, None)


def test_fsp_refuses_channel_mismatch():
    student, teacher = model_dict["wrn_40_1"](num_classes=100), model_dict["wrn_40_2"](num_classes=100)
    with pytest.raises(UserError, match=r"FSP needs equal channel counts.*"
                                        r"\[16, 16, 32, 64\].*\[16, 32, 64, 128\]"):
        build(make_cfg("fsp"), student, teacher)


@pytest.mark.parametrize("cfg,message", [
    (dict(distill="hint", hint_layer=4), "hint_layer 4 is out of range.*0..3"),
    (dict(distill="hint", hint_layer=-1), "hint_layer -1 is out of range"),
    (dict(distill="ASKD", group="target", layer=4), "layer 4 is out of range.*0..3"),
    (dict(distill="crd", nce_k=181), "nce_k 181 is larger than the 180 negatives"),
])
def test_user_errors(cfg, message):
    student, teacher = small_pair()
    with pytest.raises(UserError, match=message):
        build(make_cfg(**cfg), student, teacher, TRAIN_TARGETS)
