"""DKD and OFD: every loss and gradient against the figures measured on mdistiller
(reference/losses_mdistiller_a.json), DKD's warm-up through the Trainer, OFD's margins as buffers
and the teacher's weights untouched, the refusals, a short run lowering each loss, and DKD beating the
student alone on the data-poor synthetic task."""
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import dataset
from common.errors import UserError
from distillers import build
from helper.config import load_config
from helper.distributed import Context
from helper.trainer import Trainer
from models import model_dict
from runs import make_cfg
from data_poor import final_accuracy
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses_mdistiller_a.json")))
CASES = REF["cases"]
OFD_CASES = [case for case in CASES if "loss" in case["ofd"]]
VALUE, GRAD = dict(rel=1e-6, abs=0), dict(rel=1e-5, abs=0)


def case_id(case):
    return f"{case['teacher']}-{case['student']}"


@pytest.fixture(scope="module")
def zoo():
    """name -> (model, pre-activation feats, logits) of one forward of fixed_input(8), float64,
    deterministic weights; teachers in eval mode, students in train mode."""
    teachers = {case["teacher"] for case in CASES}
    cache = {}
    with torch.no_grad():
        for name in sorted(teachers | {case["student"] for case in CASES}):
            model = fill_deterministic(model_dict[name](num_classes=100).double())
            model.train(name not in teachers)
            feats, logits = model(fixed_input(8), is_feat=True, preact=True)
            cache[name] = model, feats, logits
    return cache


def assert_grad_matches(grad, ref):
    assert grad.sum().item() == pytest.approx(ref["sum"], rel=1e-5, abs=1e-12 * ref["norm"])
    assert grad.norm().item() == pytest.approx(ref["norm"], **GRAD)
    assert grad.flatten()[:len(ref["first"])].tolist() == pytest.approx(ref["first"], **GRAD)


# -- DKD -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_dkd_matches_mdistiller(zoo, case):
    teacher, _, logits_t = zoo[case["teacher"]]
    student, _, logits_s = zoo[case["student"]]
    target = torch.tensor(case["labels"])
    settings = {k: v for k, v in case["dkd"].items() if isinstance(v, dict)}
    assert set(settings) == {"default", "beta6", "a0.5_b2_T2"}
    for ref in settings.values():
        cfg = make_cfg("dkd", beta=1.0, dkd_alpha=ref["alpha"], dkd_beta=ref["beta"], kd_T=ref["T"])
        distiller = build(cfg, student, teacher).double()
        logits = logits_s.clone().requires_grad_(True)
        loss = distiller.method_losses(None, logits, None, logits_t, target, None)["dkd"]
        assert loss.item() == pytest.approx(ref["loss"], **VALUE)
        if "grad_logits_s" in ref:
            loss.backward()
            assert_grad_matches(logits.grad, ref["grad_logits_s"])


def test_dkd_warm_up_matches_mdistiller_through_the_whole_forward(zoo):
    """mdistiller's DKD class itself (warm-up 20) at epochs 1, 10, 20, 30: here `start_epoch`
    and the distiller's own forward of both models (the student's batch statistics)."""
    case = next(c for c in CASES if (c["teacher"], c["student"]) == ("wrn_40_2", "wrn_16_2"))
    teacher, student = zoo["wrn_40_2"][0], zoo["wrn_16_2"][0]
    distiller = build(make_cfg("dkd", beta=1.0, warmup_epochs=20), student, teacher).double()
    distiller.train()
    for epoch in (1, 10, 20, 30):
        distiller.start_epoch(epoch)
        with torch.no_grad():
            _, losses = distiller(fixed_input(8), torch.tensor(case["labels"]))
        assert set(losses) == {"ce", "dkd"}
        assert losses["dkd"].item() == pytest.approx(case["dkd"][f"default_warmup20_epoch{epoch}"], **VALUE)


def test_dkd_warm_up_follows_the_epoch_through_the_trainer(write_cfg):
    """The Trainer moves the factor before every epoch: min(epoch / 20, 1). The learning rate is
    too small to move any weight, so the loss differs between epochs by the factor alone."""
    cfg = load_config(write_cfg(dict(model_s="resnet8", model_t="resnet14", path_t="unused", distill="dkd",
                                     gamma=0.0, alpha=0.0, beta=1.0, warmup_epochs=20, learning_rate=1e-30,
                                     momentum=0.0, weight_decay=0.0, epochs=30, lr_decay_epochs="30",
                                     batch_size=4, num_workers=0, device="cpu")), script="student")
    torch.manual_seed(0)
    distiller = build(cfg, model_dict["resnet8"](num_classes=100), model_dict["resnet14"](num_classes=100))
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.arange(4) * 7, torch.arange(4))
    loader = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, 1, 0, shuffle=False))
    # rank 1 of 1: the Trainer trains the epoch but neither evaluates nor writes a run folder
    trainer = Trainer(cfg, distiller, loader, None, None, None, torch.device("cpu"), ctx=Context(rank=1))
    seen, step = [], trainer.train_step

    def recording_step(*batch):
        logits, losses, loss = step(*batch)
        seen.append(losses["dkd"].item())
        return logits, losses, loss
    trainer.train_step = recording_step
    epochs = (1, 10, 20, 30)
    for epoch in epochs:
        trainer.one_epoch(epoch)
    loss = dict(zip(epochs, seen))
    assert len(seen) == 4 and loss[20] > 0
    assert loss[1] == pytest.approx(loss[20] / 20, **VALUE)
    assert loss[10] == pytest.approx(loss[20] / 2, **VALUE)
    assert loss[30] == pytest.approx(loss[20], **VALUE)


def test_dkd_refuses_a_single_class():
    torch.manual_seed(0)
    student, teacher = model_dict["resnet8"](num_classes=1), model_dict["resnet8"](num_classes=1)
    distiller = build(make_cfg("dkd", beta=1.0), student, teacher)
    with pytest.raises(UserError, match="at least 2 classes"):
        distiller(torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))


# -- OFD -----------------------------------------------------------------------------------------

def ofd_for(zoo, case):
    """OFD built on the filled teacher (its margins), each connector filled alone."""
    distiller = build(make_cfg("ofd", beta=0.001), zoo[case["student"]][0], zoo[case["teacher"]][0]).double()
    for connector in distiller.connectors:
        fill_deterministic(connector)
        assert list(connector.state_dict()) == case["ofd"]["connector_keys"]
    return distiller


@pytest.mark.parametrize("case", OFD_CASES, ids=case_id)
def test_ofd_matches_mdistiller(zoo, case):
    _, feats_t, logits_t = zoo[case["teacher"]]
    _, feats_s, logits_s = zoo[case["student"]]
    ref = case["ofd"]
    distiller = ofd_for(zoo, case)
    assert len(distiller.connectors) == len(ref["margins"]) == ref["n_feats"]
    for margin, expected in zip(distiller.margins, ref["margins"]):
        # the original rounds its margins to float32: 1e-7 apart from the float64 ones here
        assert margin.sum().item() == pytest.approx(expected["sum"], **VALUE)
        assert margin.flatten()[:5].tolist() == pytest.approx(expected["first"], **VALUE)
    feats = [f.clone().requires_grad_(True) for f in feats_s]
    loss = distiller.method_losses(feats, logits_s, feats_t, logits_t, None, None)["ofd"]
    assert loss.item() == pytest.approx(ref["loss"], **VALUE)
    if "grad_preact_s" in ref:
        loss.backward()
        used = feats[1:-1][-ref["n_feats"]:]
        for feat, grad in zip(used, ref["grad_preact_s"]):
            assert_grad_matches(feat.grad, grad)
        assert all(f.grad is None for f in feats if all(f is not u for u in used))


@pytest.mark.parametrize("case", [c for c in CASES if "unsupported" in c["ofd"]], ids=case_id)
def test_ofd_refuses_the_pairs_mdistiller_cannot_run(zoo, case):
    with pytest.raises(UserError, match="OFD cannot use this"):
        build(make_cfg("ofd", beta=0.001), zoo[case["student"]][0], zoo[case["teacher"]][0])


def test_ofd_refuses_teachers_it_cannot_pair():
    torch.manual_seed(0)
    make = lambda name: model_dict[name](num_classes=10)  # noqa: E731
    with pytest.raises(UserError, match="more maps"):
        build(make_cfg("ofd", beta=1.0), make("resnet8"), make("vgg8"))
    with pytest.raises(UserError, match="get_bn_before_relu"):
        build(make_cfg("ofd", beta=1.0), make("resnet8"), make("ShuffleV2"))
    teacher = make("resnet14")
    with torch.no_grad():
        teacher.get_bn_before_relu()[1].weight[3] = 0.0
    with pytest.raises(UserError, match="weight of 0"):
        build(make_cfg("ofd", beta=1.0), make("resnet8"), teacher)


def test_ofd_margins_are_buffers_and_the_teacher_trains_its_bn_statistics_only():
    cfg = make_cfg("ofd", beta=1.0, learning_rate=0.1)
    torch.manual_seed(0)
    teacher = model_dict["resnet14"](num_classes=100)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = build(cfg, model_dict["resnet8"](num_classes=100), teacher)
    names = {name for name, _ in distiller.named_parameters()}
    assert not any(name.startswith("margin") for name in names)
    assert {f"margin{i}" for i in range(3)} <= set(distiller.state_dict())  # saved with the run
    assert not any(p is q for p in teacher.parameters() for q in distiller.parameters())
    margins = [m.clone() for m in distiller.margins]
    assert all(m.shape == (1, bn.num_features, 1, 1) and (m < 0).all()
               for m, bn in zip(margins, teacher.get_bn_before_relu()))
    trainer = Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))
    assert {id(p) for group in trainer.optimizer.param_groups for p in group["params"]} == \
        {id(p) for p in distiller.parameters()}
    distiller.train()
    for _ in range(2):
        trainer.step(trainer.optimizer, distiller, torch.randn(4, 3, 32, 32), torch.arange(4), torch.arange(4))
    assert all(torch.equal(a, b) for a, b in zip(margins, distiller.margins))
    assert teacher.training  # mdistiller's OFD: the teacher in train mode, batch statistics
    for key, value in teacher.state_dict().items():  # only its BN statistics moved
        assert torch.equal(value, before[key]) == (not key.endswith(("running_mean", "running_var",
                                                                       "num_batches_tracked"))), key
    assert all(p.grad is None for p in teacher.parameters())
    distiller.eval()
    assert not teacher.training
    assert distiller.double().margins[0].dtype == torch.float64  # buffers follow the distiller


# -- both ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dkd", "ofd"])
def test_a_short_run_lowers_the_loss(method, synthetic_dir, write_cfg):
    """Twenty steps on one fixed batch, trained on the method's term alone (gamma 0): it goes down."""
    cfg = load_config(write_cfg(dict(model_s="resnet8", model_t="resnet14", path_t="unused", distill=method,
                                     gamma=0.0, alpha=0.0, beta=1.0 if method == "dkd" else 0.001,
                                     learning_rate=0.02, epochs=1, lr_decay_epochs="1")), script="student")
    torch.manual_seed(0)
    teacher, student = model_dict["resnet14"](num_classes=100), model_dict["resnet8"](num_classes=100)
    targets = torch.as_tensor(dataset.read_split(synthetic_dir, "train")[1])
    distiller = build(cfg, student, teacher)
    distiller.start_epoch(20)
    trainer = Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))
    batch = torch.randn(16, 3, 32, 32), targets[:16], torch.arange(16)
    first = trainer.step(trainer.optimizer, distiller, *batch)[1][method].item()
    for _ in range(20):
        last = trainer.step(trainer.optimizer, distiller, *batch)[1][method].item()
    assert last < first, (first, last)


@pytest.mark.xdist_group("data_poor")  # one process trains its teacher and lone student once
def test_dkd_from_a_trained_teacher_beats_the_student_alone(tmp_path_factory):
    """test_methods' data-poor task with DKD instead of KD, by KD's margin; the warm-up scaled to
    the 10 epochs (1 of 10, as 20 of 240 rounds to)."""
    results = {"alone": final_accuracy(tmp_path_factory, "alone"),
               "dkd": final_accuracy(tmp_path_factory, "dkd", distill="dkd", alpha=0.0, beta=1.0, warmup_epochs=1)}
    print(f"\ndata-poor synthetic task, final test top-1: {results}")
    assert results["dkd"] > results["alone"] + 3.0, results
