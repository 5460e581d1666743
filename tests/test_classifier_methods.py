"""The methods that reuse or reshape the classifier, against the figures measured on each original
(reference/losses_classifier_a.json; reference/README.md says how): SRD (the original and
torchdistill agree bit for bit)."""
import functools
import json
import os

import pytest
import torch

from distillers import build
from distillers.functional import hinton_kd
from models import model_dict
from models.contract import classifier
from runs import make_cfg
from tests.deterministic import fill_deterministic, fixed_input

HERE = os.path.join(os.path.dirname(__file__), "reference")
REF_A = json.load(open(os.path.join(HERE, "losses_classifier_a.json")))
VALUE, GRAD = dict(rel=1e-6, abs=0), dict(rel=1e-5, abs=0)


def case_id(case):
    return f"{case['teacher']}-{case['student']}"


def models(case):
    """(student in train mode, teacher in eval mode, their feats and logits of fixed_input(8)), float64."""
    student = fill_deterministic(model_dict[case["student"]](num_classes=100).double()).train()
    teacher = fill_deterministic(model_dict[case["teacher"]](num_classes=100).double()).eval()
    with torch.no_grad():
        feats_t, logits_t = teacher(fixed_input(8), is_feat=True)
    feats_s, logits_s = student(fixed_input(8), is_feat=True)
    return student, teacher, feats_s, logits_s, feats_t, logits_t


def assert_grad(grad, ref, scale=None):
    assert grad.norm().item() == pytest.approx(ref["norm"], **GRAD)
    assert grad.sum().item() == pytest.approx(ref["sum"], rel=1e-5, abs=1e-12 * (scale or ref["norm"]))
    assert grad.flatten()[:len(ref["first"])].tolist() == pytest.approx(ref["first"], **GRAD)


@pytest.mark.parametrize("case", REF_A["cases"], ids=case_id)
def test_srd_matches_the_original(case):
    ref = case["srd"]
    student, teacher, feats_s, _, feats_t, logits_t = models(case)
    distiller = build(make_cfg("srd", beta=1.0), student, teacher).double().train()
    fill_deterministic(distiller.embed)
    pooled = feats_s[-1].detach().clone().requires_grad_()
    feat = distiller.method_losses([pooled], None, feats_t, logits_t, None, None)["srd"]
    feat.backward()
    assert feat.item() == pytest.approx(ref["feat_term"], **VALUE)
    assert_grad(pooled.grad, ref["feat_term_grad_pooled_s"], scale=ref["grad_pooled_s"]["norm"])
    assert_grad(distiller.embed.weight.grad, ref["feat_term_grad_projector_weight"])
    # the whole criterion: the feature term + KL at T = 1 through the student's classifier
    distiller.zero_grad()
    pooled = feats_s[-1].detach().clone().requires_grad_()
    kl = hinton_kd(classifier(student)(pooled), logits_t, 1.0)
    loss = distiller.method_losses([pooled], None, feats_t, logits_t, None, None)["srd"] + kl
    loss.backward()
    assert kl.item() == pytest.approx(ref["kl_term"], **VALUE)
    assert loss.item() == pytest.approx(ref["loss"], **VALUE)
    assert_grad(pooled.grad, ref["grad_pooled_s"])
    assert_grad(distiller.embed.weight.grad, ref["grad_projector_weight"])
    assert distiller.embed.bias.grad.abs().max().item() < 1e-12  # the batch normalisation removes any bias
    assert case["srd_torchdistill"]["loss"] == pytest.approx(ref["loss"], rel=1e-12)


REF_B = json.load(open(os.path.join(HERE, "losses_classifier_b.json")))
CAT_SETTINGS = [(case, setting) for case in REF_B["cases"] for setting in ("config", "nearest_config", "defaults")
                if setting in case["catkd"]]


@pytest.mark.parametrize("case, setting", CAT_SETTINGS, ids=lambda x: x if isinstance(x, str) else case_id(x))
def test_catkd_matches_the_original(case, setting):
    from distillers.base import MapFeatures
    from models.contract import forward_with_map
    ref = case["catkd"][setting]
    student = fill_deterministic(model_dict[case["student"]](num_classes=100).double()).train()
    teacher = fill_deterministic(model_dict[case["teacher"]](num_classes=100).double()).eval()
    distiller = build(make_cfg("catkd", beta=ref["CAT_loss_weight"], cat_resolution=ref["CAM_RESOLUTION"],
                               cat_normalize=ref["IF_NORMALIZE"]), student, teacher).double().train()
    with torch.no_grad():
        feats_t, logits_t, map_t = forward_with_map(teacher, fixed_input(8))
    feats_s, logits_s, map_s = forward_with_map(student, fixed_input(8))  # the bias now 0 and frozen
    labels = torch.tensor(case["labels"])
    assert torch.nn.functional.cross_entropy(logits_s, labels).item() == pytest.approx(ref["loss_CE"], **VALUE)
    leaf = map_s.detach().clone().requires_grad_()
    loss = distiller.beta * distiller.method_losses(MapFeatures(feats_s, leaf), logits_s,
                                                    MapFeatures(feats_t, map_t), logits_t, labels, None)["cat"]
    loss.backward()
    assert loss.item() == pytest.approx(ref["loss_CAT"], **VALUE)
    assert (loss / distiller.beta).item() == pytest.approx(ref["cat_loss_unweighted"], **VALUE)
    assert_grad(leaf.grad, ref["grad_map_s"])
    assert_grad(classifier(student).weight.grad, ref["grad_classifier_weight_s"])
    assert list(map_s.shape) == case["catkd"]["map_s"]["shape"] and list(map_t.shape) == case["catkd"]["map_t"]["shape"]
    assert map_t.sum().item() == pytest.approx(case["catkd"]["map_t"]["sum"], **VALUE)


@functools.lru_cache(maxsize=None)
def pair_maps(teacher_name, student_name):
    """(student, teacher, the student's logits, the student's and the teacher's pooled maps of
    fixed_input(8)), float64, deterministic weights; built once per pair."""
    from models.contract import forward_with_map
    student = fill_deterministic(model_dict[student_name](num_classes=100).double()).train()
    teacher = fill_deterministic(model_dict[teacher_name](num_classes=100).double()).eval()
    with torch.no_grad():
        _, _, map_t = forward_with_map(teacher, fixed_input(8))
        _, logits_s, map_s = forward_with_map(student, fixed_input(8))
    return student, teacher, logits_s, map_s, map_t


SDD_SETTINGS = [(case, group, scales, base, setting)
                for case in REF_B["cases"] for group in ("M", "M_mixed") for scales in case["sdd"][group]
                for base in ("kd", "dkd", "nkd") for setting in ("config", "defaults")
                if setting in case["sdd"][group][scales][f"sdd_{base}"]]


def sdd_id(value):
    return value if isinstance(value, str) else case_id(value)


@pytest.mark.parametrize("case, group, scales, base, setting", SDD_SETTINGS, ids=sdd_id)
def test_sdd_matches_the_original(case, group, scales, base, setting):
    from distillers.sdd import region_logits
    record = case["sdd"][group][scales]
    ref = record[f"sdd_{base}"][setting]
    knobs = dict(sdd_scales=scales.strip("[]"), sdd_base=base, kd_T=ref["T"])
    if base == "kd":
        knobs.update(gamma=ref["CE_WEIGHT"], beta=ref["KD_WEIGHT"])
    else:
        knobs.update(gamma=ref["CE_WEIGHT"], beta=1.0, warmup_epochs=int(ref["warmup"]),
                     dkd_beta=ref["BETA"] if base == "dkd" else ref["gamma_is_DKD_BETA"])
        if base == "dkd":
            knobs.update(dkd_alpha=ref["ALPHA"])
    student, teacher, logits_s, map_s, map_t = pair_maps(case["teacher"], case["student"])
    distiller = build(make_cfg("sdd", **knobs), student, teacher).double().train()
    labels = torch.tensor(record["labels"])
    assert (distiller.gamma * torch.nn.functional.cross_entropy(logits_s, labels)).item() == \
        pytest.approx(ref["loss_ce"], **VALUE)
    scale_levels = tuple(int(s) for s in knobs["sdd_scales"].split(","))
    patch_t = region_logits(teacher, map_t, scale_levels)
    assert patch_t.sum().item() == pytest.approx(record["patch_t"]["sum"], **VALUE)
    assert patch_t.argmax(dim=1).tolist() == record["teacher_region_argmax"]
    for epoch in [e for e in (1, 20) if f"loss_kd_epoch{e}" in ref]:  # (M_mixed: epoch 20 only)
        distiller.start_epoch(epoch)
        leaf = map_s.detach().clone().requires_grad_()
        patch_s = region_logits(student, leaf, scale_levels)
        patch_s.retain_grad()
        loss = distiller.beta * distiller.warmup(distiller.region_loss(patch_s, patch_t, labels))
        assert loss.item() == pytest.approx(ref[f"loss_kd_epoch{epoch}"], **VALUE)
    assert list(patch_s.shape) == record["patch_s"]["shape"]
    assert patch_s.sum().item() == pytest.approx(record["patch_s"]["sum"], **VALUE)
    loss.backward()
    for grad, key in ((patch_s.grad, "grad_patch_s"), (leaf.grad, "grad_map_s")):  # (where measured)
        if key in ref:
            assert_grad(grad, ref[key])


@pytest.mark.parametrize("case", REF_A["cases"], ids=case_id)
def test_simkd_matches_the_original(case):
    from distillers.simkd import SimKDStudent
    ref = case["simkd"]
    student, teacher, feats_s, _, feats_t, _ = models(case)
    distiller = build(make_cfg("simkd", gamma=0.0, beta=1.0, simkd_factor=ref["factor"]), student, teacher)
    distiller = distiller.double().train()
    fill_deterministic(distiller.projector)
    assert list(distiller.projector.state_dict()) == ref["state_dict_keys"]
    assert sum(p.numel() for p in distiller.projector.parameters()) == ref["param_count"]
    leaf = feats_s[-2].detach().clone().requires_grad_()
    loss = distiller.method_losses([leaf, None], None, feats_t, None, None, None)["simkd"]
    loss.backward()
    assert loss.item() == pytest.approx(ref["loss"], **VALUE)
    assert_grad(leaf.grad, ref["grad_feat_s"], scale=1.0)
    for key, norm in ref["grad_param_norm"].items():
        assert distiller.projector.get_parameter(key).grad.norm().item() == pytest.approx(norm, **GRAD), key
    assert classifier(teacher).weight.grad is None  # reused, frozen
    # deployment: the teacher's classifier on the pooled projected map (the reference: a freshly
    # filled projector in eval mode, on the student's map above)
    fill_deterministic(distiller.projector)
    deployed = distiller.deployed.eval()
    assert isinstance(deployed, SimKDStudent)
    with torch.no_grad():
        logits = deployed.head(feats_s[-2])
    assert logits.sum().item() == pytest.approx(ref["logits_eval"]["sum"], **VALUE)
    assert logits.flatten()[:5].tolist() == pytest.approx(ref["logits_eval"]["first"], **VALUE)
    labels = torch.tensor(case["labels"])
    assert torch.nn.functional.cross_entropy(logits, labels).item() == pytest.approx(ref["ce_of_logits_eval"], **VALUE)


def test_simkds_deployed_checkpoint_evaluates_to_the_runs_own_accuracy(write_cfg, synthetic_dir, teacher_file, tmp_path):
    import re

    import evaluate
    from runs import call_cli, run_script, tiny_config
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), model_s="resnet8", model_t="resnet14", path_t=teacher_file,
                      distill="simkd", gamma=0.0, beta=1.0, epochs=1, lr_decay_epochs="1")
    cfg.pop("model")
    code, out, err = run_script("train_student.py", write_cfg(cfg))
    assert code == 0, out + err
    assert re.search(r"method simkd deploys SimKDStudent: [\d,]+ parameters \(the student alone [\d,]+\)", out)
    accuracy = float(re.search(r"^epoch 1 .* test_acc (\S+)", out, re.M).group(1))
    for name in ("resnet8_last.pth", "resnet8_best.pth"):
        code, text = call_cli(evaluate, [str(tmp_path / "run" / name), "--json", "--device", "cpu"])
        assert code == 0, text
        assert json.loads(text.strip().splitlines()[-1])["top1"] == pytest.approx(accuracy, rel=1e-5, abs=1e-4)
    saved = torch.load(tmp_path / "run" / "resnet8_last.pth", weights_only=False)["model"]
    assert any(k.startswith("projector.") for k in saved) and "classifier.weight" in saved  # backbone + P + W_t
