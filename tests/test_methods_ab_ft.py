"""AB and FT: their init-stage and main-stage losses against the original's figures
(reference/losses_repdistiller_b.json), what each stage of a real Trainer trains (and which BN
statistics move), FT's init learning rate, a short run lowering each loss, the user errors."""
import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from common.errors import UserError
from distillers import AB, FT, METHODS, build
from helper.trainer import Trainer
import runs
from models import model_dict
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses_repdistiller_b.json")))
VALUE, GRAD = dict(rel=1e-6, abs=0), dict(rel=1e-5, abs=1e-12)  # abs: sums of ~1e-15 after a BN
LABELS = torch.arange(8) * 13 % 100
# every connector kind (none, 1x1 conv, transposed conv) and student family; the other figures
# (resnet110, ShuffleV2, the ResNet50 teacher: 132M paraphraser parameters) cost too much time
CASES = [c for c in REF if (c["teacher"], c["student"]) in {
    ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"),
    ("resnet32x4", "ShuffleV1"), ("vgg13", "MobileNetV2")}]
IDS = [f"{c['teacher']}-{c['student']}" for c in CASES]


def make_cfg(distill, model_s="resnet8", **overrides):
    return runs.make_cfg(distill, model_s=model_s, **overrides)


def filled(name):
    return fill_deterministic(model_dict[name](num_classes=100).double())


@pytest.fixture(scope="module")
def teachers():
    """name -> (model, feats, preact feats) of fixed_input(8), in eval mode (no state moves)."""
    cache = {}
    with torch.no_grad():
        for name in sorted({c["teacher"] for c in CASES}):
            model = filled(name).eval()
            cache[name] = (model, model(fixed_input(8), is_feat=True)[0],
                           model(fixed_input(8), is_feat=True, preact=True)[0])
    return cache


def reference_distiller(case, distill, teacher):
    """The case's distiller on deterministic float64 models, its own modules filled under the
    keys of the original's modules: Connector's `connectors.0.conv.weight`...; Paraphraser's and
    Translator's `encoder.0.weight`..."""
    distiller = build(make_cfg(distill, case["student"], beta=1.0), filled(case["student"]), teacher).double()
    if distill == "abound":
        holder = torch.nn.Module()
        holder.connectors = distiller.connectors
        fill_deterministic(holder)
    else:
        fill_deterministic(distiller.paraphraser)
        fill_deterministic(distiller.translator)
    return distiller


def running_mean_sum(model):
    return sum(b.sum().item() for k, b in model.state_dict().items() if k.endswith("running_mean"))


def assert_grad(grad, ref):
    assert grad.sum().item() == pytest.approx(ref["sum"], **GRAD)
    assert grad.norm().item() == pytest.approx(ref["norm"], **GRAD)
    assert grad.flatten()[:5].tolist() == pytest.approx(ref["first"], **GRAD)


def in_init_modes(distiller):
    """The modes the Trainer sets for an init stage (the original's: only its modules train)."""
    stage = distiller.init_stage()
    distiller.eval()
    stage.modules.train()
    return stage


# -- the reference figures ---------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ab_matches_the_original(case, teachers):
    ref = case["abound"]
    teacher, _, preact_t = teachers[case["teacher"]]
    distiller = reference_distiller(case, "abound", teacher)
    assert ["connectors." + k for k in distiller.connectors.state_dict()] == ref["connector_keys"]
    # the init stage: the loss of the student's preact maps, and its gradient w.r.t. them
    in_init_modes(distiller)
    feats_s, _ = distiller.student(fixed_input(8), is_feat=True, preact=True)
    leaves = [f.detach().requires_grad_() for f in feats_s[1:-1]]
    loss = distiller.boundary_loss(leaves, preact_t[1:-1])
    assert loss.item() == pytest.approx(ref["init"]["total"], **VALUE)
    for grad, grad_ref in zip(torch.autograd.grad(loss, leaves), ref["init"]["grad_feats_s_1_to_-1"], strict=True):
        assert_grad(grad, grad_ref)
    # which BN statistics moved: only inside the feature modules and the connectors
    assert running_mean_sum(distiller.student) == pytest.approx(ref["init"]["student_running_mean_sum"], **VALUE)
    assert running_mean_sum(distiller.connectors) == pytest.approx(ref["init"]["connector_running_mean_sum"],
                                                                   **VALUE)
    # the main training runs the student in train mode with preact=True (WRN: BNs called twice)
    distiller.student.load_state_dict(filled(case["student"]).state_dict())
    distiller.train()
    _, logits = distiller.student(fixed_input(8), is_feat=True, preact=distiller.preact)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(ref["main"]["ce"], **VALUE)
    assert running_mean_sum(distiller.student) == pytest.approx(ref["main"]["student_running_mean_sum"], **VALUE)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ft_matches_the_original(case, teachers):
    ref = case["factor"]
    teacher, feats_t, _ = teachers[case["teacher"]]
    distiller = reference_distiller(case, "factor", teacher)
    assert list(distiller.paraphraser.state_dict()) == ref["paraphraser_keys"]
    assert list(distiller.translator.state_dict()) == ref["translator_keys"]
    # the init stage: the teacher's feats[-2] reconstructed by the paraphraser in train mode
    in_init_modes(distiller)
    paraphraser = distiller.paraphraser.requires_grad_(True)  # as the Trainer does for the stage
    loss = F.mse_loss(paraphraser.decoder(paraphraser.encoder(feats_t[-2])), feats_t[-2])
    assert loss.item() == pytest.approx(ref["init"]["mse"], **VALUE)
    assert_grad(torch.autograd.grad(loss, paraphraser.encoder[0].weight)[0],
                ref["init"]["grad_paraphraser_encoder.0.weight"])
    # the main training: student and translator in train mode
    distiller.train()
    feats_s, _ = distiller.student(fixed_input(8), is_feat=True)
    leaf = feats_s[-2].detach().requires_grad_()
    loss = distiller.factor_loss(leaf, feats_t[-2])
    assert loss.item() == pytest.approx(ref["main"]["ft"], **VALUE)
    assert running_mean_sum(distiller.translator) == pytest.approx(ref["main"]["translator_running_mean_sum"],
                                                                   **VALUE)
    assert_grad(torch.autograd.grad(loss, leaf)[0], ref["main"]["grad_feat_s_-2"])


def test_both_match_the_original_end_to_end(teachers):
    """One pair through the calls the Trainer makes: the init stage's losses and forward."""
    case = next(c for c in CASES if c["student"] == "wrn_40_1")
    teacher = teachers[case["teacher"]][0]
    ab = reference_distiller(case, "abound", teacher)
    assert in_init_modes(ab).losses(fixed_input(8), LABELS)["ab"].item() == pytest.approx(
        case["abound"]["init"]["total"], **VALUE)
    assert running_mean_sum(ab.student) == pytest.approx(case["abound"]["init"]["student_running_mean_sum"], **VALUE)
    ab.student.load_state_dict(filled(case["student"]).state_dict())
    _, losses = ab.train()(fixed_input(8), LABELS)
    assert set(losses) == {"ce"} and losses["ce"].item() == pytest.approx(case["abound"]["main"]["ce"], **VALUE)
    assert running_mean_sum(ab.student) == pytest.approx(case["abound"]["main"]["student_running_mean_sum"], **VALUE)
    ft = reference_distiller(case, "factor", teacher)
    stage = in_init_modes(ft)
    hook = ft.student.register_forward_hook(lambda *a: pytest.fail("the student ran in FT's init stage"))
    assert stage.losses(fixed_input(8), LABELS)["ft_init"].item() == pytest.approx(case["factor"]["init"]["mse"],
                                                                                  **VALUE)
    hook.remove()
    ft.beta = 200.0
    _, losses = ft.train()(fixed_input(8), LABELS)
    assert losses["ft"].item() == pytest.approx(200 * case["factor"]["main"]["ft"], **VALUE)


# -- what a real Trainer trains in each stage --------------------------------------------------

class EpochSampler(SequentialSampler):
    def set_epoch(self, epoch):
        pass


def run_trainer(distiller, cfg, steps=2):
    """A Trainer without a run folder over `steps` batches of 8 random images; returns it and
    the init stage's log lines."""
    data = TensorDataset(torch.randn(8 * steps, 3, 32, 32), torch.arange(8 * steps) % 100, torch.arange(8 * steps))
    loader = DataLoader(data, batch_size=8, sampler=EpochSampler(data))
    lines = []
    quiet = SimpleNamespace(save_latest=lambda *a: None, message=lines.append, config_dict={})
    return Trainer(cfg, distiller, loader, None, quiet, quiet, torch.device("cpu")), lines


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def tiny_cfg(distill, model_s, **overrides):
    return make_cfg(distill, model_s, **{**dict(init_epochs=1, print_freq=100, learning_rate=0.05), **overrides})


def test_ab_stages_train_what_the_original_trains():
    torch.manual_seed(0)
    student, teacher = model_dict["wrn_16_1"](num_classes=100), model_dict["wrn_16_2"](num_classes=100)
    cfg = tiny_cfg("abound", "wrn_16_1")
    distiller = build(cfg, student, teacher)
    assert all(list(c.parameters()) for c in distiller.connectors)  # 16/32/64 -> 32/64/128 channels
    trainer, lines = run_trainer(distiller, cfg)
    main_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert main_params == {id(p) for p in student.parameters()}  # the connectors are not trained there
    s0, c0, t0 = snapshot(student), snapshot(distiller.connectors), snapshot(teacher)
    trainer.init_stage(None)
    moved = changed(s0, student)
    feature_keys = {k for k in s0 if k.startswith(("conv1.", "block1.", "block2.", "block3."))}
    assert moved and moved <= feature_keys
    assert {"block1.layer.0.conv1.weight", "block2.layer.0.bn1.running_mean"} <= moved
    # not trained: the classifier; outside the feature modules, in eval mode: the last BN
    assert not moved & {"fc.weight", "fc.bias", "bn1.weight", "bn1.running_mean", "bn1.running_var"}
    assert changed(c0, distiller.connectors) == set(distiller.connectors.state_dict())
    assert not changed(t0, teacher)
    assert not any(p.requires_grad for p in distiller.connectors.parameters())
    assert lines and lines[0].startswith("init epoch 1 lr 0.05 ")
    # the main training (modes as Trainer.one_epoch sets them): the student alone
    s1, c1 = snapshot(student), snapshot(distiller.connectors)
    distiller.train()
    for _ in range(2):
        _, losses, _ = trainer.train_step(torch.randn(8, 3, 32, 32), torch.arange(8), torch.arange(8))
    assert set(losses) == {"ce"}
    assert "fc.weight" in changed(s1, student) and "bn1.running_mean" in changed(s1, student)
    assert not changed(c1, distiller.connectors) and not changed(t0, teacher)


def test_ft_stages_train_what_the_original_trains():
    torch.manual_seed(0)
    student, teacher = model_dict["resnet8"](num_classes=100), model_dict["resnet14"](num_classes=100)
    cfg = tiny_cfg("factor", "resnet8", beta=200.0)
    distiller = build(cfg, student, teacher)
    trainer, lines = run_trainer(distiller, cfg)
    main_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert main_params == {id(p) for p in [*student.parameters(), *distiller.translator.parameters()]}
    s0, p0, r0, t0 = (snapshot(m) for m in (student, distiller.paraphraser, distiller.translator, teacher))
    trainer.init_stage(None)
    assert changed(p0, distiller.paraphraser) == set(distiller.paraphraser.state_dict())
    assert not changed(s0, student) and not changed(r0, distiller.translator) and not changed(t0, teacher)
    assert not any(p.requires_grad for p in distiller.paraphraser.parameters())
    assert lines and lines[0].startswith("init epoch 1 lr 0.01 ")  # not the config's 0.05
    p1 = snapshot(distiller.paraphraser)
    distiller.train()
    for _ in range(2):
        _, losses, _ = trainer.train_step(torch.randn(8, 3, 32, 32), torch.arange(8), torch.arange(8))
    assert set(losses) == {"ce", "ft"}
    assert "fc.weight" in changed(s0, student)
    assert changed(r0, distiller.translator) == set(distiller.translator.state_dict())
    assert not changed(p1, distiller.paraphraser) and not changed(t0, teacher)


def test_ft_init_rate_is_the_configs_for_shufflenet():
    torch.manual_seed(0)
    cfg = tiny_cfg("factor", "ShuffleV1", learning_rate=0.02)
    distiller = build(cfg, model_dict["ShuffleV1"](num_classes=100), model_dict["resnet8"](num_classes=100))
    assert distiller.init_stage().lr is None
    trainer, lines = run_trainer(distiller, cfg, steps=1)
    trainer.init_stage(None)
    assert lines and lines[0].startswith("init epoch 1 lr 0.02 ")
    assert build(tiny_cfg("factor", "wrn_16_1"), model_dict["wrn_16_1"](num_classes=100),
                 model_dict["resnet8"](num_classes=100)).init_stage().lr == 0.01


# -- training lowers the losses; names; user errors ---------------------------------------------

def assert_lowers(step, steps=8):
    first = step()[1]
    for _ in range(steps):
        last = step()[1]
    terms = set(first) - {"ce"}
    assert terms
    for name in terms:
        assert last[name] < first[name], (name, first[name], last[name])


@pytest.mark.parametrize("distill", ["abound", "factor"])
def test_a_short_run_lowers_each_loss(distill):
    """Eight steps on one batch, on the method's terms alone (gamma 0): the init stage's loss
    goes down, and FT's main-stage term too (AB has none)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(distill, "resnet8", gamma=0.0, beta=1.0, learning_rate=0.02)
    distiller = build(cfg, model_dict["resnet8"](num_classes=100), model_dict["resnet14"](num_classes=100))
    trainer, _ = run_trainer(distiller, cfg)
    batch = torch.randn(8, 3, 32, 32), torch.arange(8), torch.arange(8)
    stage = distiller.init_stage()
    frozen = [p for p in stage.modules.parameters() if not p.requires_grad]
    for p in frozen:  # as the Trainer does for the stage
        p.requires_grad_(True)
    optimizer = trainer.make_optimizer(stage.modules.parameters(), lr=stage.lr)
    assert_lowers(lambda: trainer.step(optimizer, lambda *b: (None, stage.losses(*b)), *batch))
    for p in frozen:
        p.requires_grad_(False)
    if distill == "factor":
        assert_lowers(lambda: trainer.step(trainer.optimizer, distiller, *batch))


def test_names():
    assert METHODS["abound"] is METHODS["ab"] is AB
    assert METHODS["factor"] is METHODS["ft"] is FT


def test_user_errors():
    student, teacher = model_dict["resnet8"](num_classes=100), model_dict["resnet14"](num_classes=100)
    for distill in ("abound", "factor"):
        with pytest.raises(UserError, match="init_epochs"):
            build(make_cfg(distill, init_epochs=0), student, teacher)
    with pytest.raises(UserError, match="the student has 3 and the teacher 4"):
        build(make_cfg("abound"), student, model_dict["vgg8"](num_classes=100))
    with pytest.raises(UserError, match=r"AB cannot connect the student's \(16, 8, 8\) map"):
        AB.connector(torch.Size([16, 8, 8]), torch.Size([16, 32, 32]))
