"""OFA-KD against the figures measured on Hao840/OFAKD (reference/losses_ofa.json;
reference/README.md says how): its loss and every head's on formula-made stage tensors of a CNN, a
ViT and an MLP student (values and gradients, the projectors filled by their keys), whole forward
passes between timm's resnet18, DeiT-Tiny and ResMLP-12 in both directions, the projectors' keys,
shapes and parameter counts, and their initial distributions."""
import json
import os

import pytest
import torch
import torch.nn as nn

from distillers import build
from distillers.ofa import ofa_loss
from models import build_model
from models.contract import forward_stages, stage_layout
from runs import make_cfg
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses_ofa.json")))
VALUE, GRAD = dict(rel=1e-6, abs=0), dict(rel=1e-5, abs=1e-12)
CASES = {"A_eps1_T1": ([1.0], 1.0), "B_epslist_T1": ([1.5, 1.2, 1.0, 1.0, 1.0], 1.0), "C_eps1_T4": ([1.0], 4.0),
         "D_eps1.5_T1": ([1.5], 1.0)}


def student(name):
    """The reference's students at 32 pixels, through the project's adapter (ResMLP-12 by timm's own
    builder: create_model cannot take its patch size)."""
    if name == "resnet18":
        return build_model("timm:resnet18", 100, 32)
    if name.startswith("deit_tiny"):
        return build_model("timm:deit_tiny_patch16_224", 100, 32, {"patch_size": 4})
    from timm.models.mlp_mixer import Affine, ResBlock, _create_mixer

    from models.library import TimmForward, adapt
    net = _create_mixer("resmlp_12_224", patch_size=4, num_blocks=12, embed_dim=384, mlp_ratio=4,
                        block_layer=ResBlock, norm_layer=Affine, img_size=32, num_classes=100)
    net = adapt(net, TimmForward)
    net.input_size = 32
    return net


class Width(nn.Module):
    """A teacher of pre-logit width `width` (the loss-level cases give its logits themselves)."""

    def __init__(self, width):
        super().__init__()
        self.width, self.fc = width, nn.Linear(width, 100)

    def forward(self, x, is_feat=False, preact=False):
        pooled = x.new_zeros(len(x), self.width)
        return ([pooled], self.fc(pooled)) if is_feat else self.fc(pooled)


def ofa(student_model, teacher, eps, T, smoothing):
    cfg = make_cfg("ofa", gamma=1.0, beta=1.0, ofa_eps=eps, ofa_temperature=T, label_smoothing=smoothing)
    torch.manual_seed(0)
    distiller = build(cfg, student_model, teacher).double()
    fill_deterministic(distiller.projector)
    return distiller.train()


def soft_labels(labels):
    """timm's mixup_target at lambda 0.7, smoothing 0.1, as the reference's (no image mixed)."""
    def one_hot(y):
        return torch.full((len(y), 100), 0.001, dtype=torch.float64).scatter_(1, y[:, None], 0.901)
    return one_hot(labels) * 0.7 + one_hot(labels.flip(0)) * 0.3


def assert_grad(grad, ref):
    assert list(grad.shape) == ref["shape"]
    assert grad.abs().sum().item() == pytest.approx(ref["sum_abs"], **GRAD)
    assert grad.norm().item() == pytest.approx(ref["norm"], **GRAD)
    assert grad.flatten()[:5].tolist() == pytest.approx(ref["first5"], **GRAD)


def test_the_projectors_keys_and_shapes_are_the_originals():
    for name, teacher_width, ref_name in (("resnet18", 768, "resnet18"), ("deit_tiny", 768, "deit_tiny"),
                                          ("resmlp_12", 768, "resmlp_12")):
        distiller = ofa(student(name), Width(teacher_width), [1.0], 1.0, 0.0)
        ours = [[k, list(v.shape)] for k, v in distiller.projector.state_dict().items()]
        assert ours == [list(item) if isinstance(item, list) else [item["key"], item["shape"]]
                        for item in REF["projector_keys"][ref_name]], name


@pytest.mark.parametrize("case", REF["loss_level"], ids=lambda c: f"{c['student']}-{c['case']}-{c['label_mode']}")
def test_the_loss_and_its_gradients_equal_the_originals_on_given_stages(case):
    eps, T = CASES[case["case"]]
    hard = case["label_mode"] == "hard"
    name = {"deit": "deit_tiny"}.get(case["student"].split("_")[0], case["student"])
    distiller = ofa(student(name), Width(case["teacher_feature_dim"]), eps, T, 0.1 if hard else 0.0)
    shapes = [tuple(case["stage_feature_shapes"][str(s)]) for s in range(1, 5)]
    stages = [torch.randn(shape, generator=torch.Generator().manual_seed(10 + s), dtype=torch.float64)
              .requires_grad_() for s, shape in enumerate(shapes, 1)]
    logits_s = (2.0 * torch.randn(4, 100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
                ).requires_grad_()
    logits_t = 3.0 * torch.randn(4, 100, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.arange(4) * 13 % 100
    target = labels if hard else soft_labels(labels)
    terms = distiller.method_losses(stages, logits_s, None, logits_t, target, None)
    ce = distiller.task_loss(logits_s, target)
    heads = [ofa_loss(distiller.projector[str(s)](stages[s - 1]), logits_t, labels, distiller.eps[s - 1], T)
             for s in range(1, 5)]
    for s, head in enumerate(heads, 1):
        assert head.item() == pytest.approx(case["stage_ofa_loss"][str(s)], **VALUE)
    assert terms["ofa"].item() == pytest.approx(case["loss_ofa"], **VALUE)
    assert terms["ofa_logits"].item() == pytest.approx(case["loss_kd_logits_term"], **VALUE)
    assert ce.item() == pytest.approx(case["loss_gt"], **VALUE)
    total = ce + sum(terms.values())
    assert total.item() == pytest.approx(case["total"], **VALUE)
    total.backward()
    assert_grad(logits_s.grad, case["grad_total_wrt_logits_s"])
    params = dict(distiller.projector.named_parameters())
    for s, tensor in enumerate(stages, 1):
        ref = case["stages"][str(s)]
        assert_grad(tensor.grad, ref["grad_total_wrt_feature"])
        for key, grad in ref["grad_stage_loss_wrt_params"].items():
            g = params[key].grad
            assert g.norm().item() == pytest.approx(grad["norm"], **GRAD), key
            assert g.flatten()[:5].tolist() == pytest.approx(grad["first5"], **GRAD), key


@pytest.mark.parametrize("run", REF["end_to_end"]["runs"], ids=lambda r: f"{r['teacher']}-{r['student']}-{r['case']}")
def test_a_whole_pass_equals_the_originals_between_cnn_vit_and_mlp(run):
    """Real models of deterministic weights: the stages the project reads through timm's
    forward_intermediates are the original's, and so are the losses and gradients."""
    eps, T = CASES[run["case"]]
    models = {}
    for role in ("student", "teacher"):
        net = student(run[role]).double()
        fill_deterministic(net)
        models[role] = net
    distiller = ofa(models["student"], models["teacher"], eps, T, 0.1)
    x, labels = fixed_input(4), torch.arange(4) * 13 % 100
    with torch.no_grad():
        stages, _ = forward_stages(distiller.student, x)
    for s, tensor in enumerate(stages, 1):
        ref = run["stage_tensors_read"][str(s)]
        assert list(tensor.shape) == ref["shape"]
        assert tensor.sum().item() == pytest.approx(ref["sum"], **VALUE)
        assert tensor.std().item() == pytest.approx(ref["std"], **VALUE)
    logits_s, losses = distiller(x, labels)
    assert logits_s.sum().item() == pytest.approx(run["student_logits"]["sum"], **VALUE)
    assert losses["ce"].item() == pytest.approx(run["loss_gt"], **VALUE)
    assert losses["ofa_logits"].item() == pytest.approx(run["loss_kd_logits_term"], **VALUE)
    assert losses["ofa"].item() == pytest.approx(run["loss_ofa"], **VALUE)
    assert sum(losses.values()).item() == pytest.approx(run["total"], **VALUE)
    sum(losses.values()).backward()
    params = dict(distiller.named_parameters())
    for key, ref in {**{f"student.{k}": v for k, v in run["grad_student_param"].items()},
                     **{f"projector.{k}": v for k, v in run["grad_projector_params"].items()}}.items():
        assert params[key].grad.norm().item() == pytest.approx(ref["norm"], **GRAD), key
        assert params[key].grad.flatten()[:5].tolist() == pytest.approx(ref["first5"], **GRAD), key


def test_the_layouts_of_a_cnn_a_vit_and_an_mlp():
    assert stage_layout(student("resnet18")) == stage_layout(student("resnet18"))
    layouts = {name: stage_layout(student(name)) for name in ("resnet18", "deit_tiny", "resmlp_12")}
    assert [(l.kind, l.prefix, l.count) for l in layouts.values()] == [("cnn", 0, 4), ("tokens", 1, 4),
                                                                       ("tokens", 0, 4)]


@pytest.mark.parametrize("config", ["resnet18_32_teacher512", "resnet18_32_teacher768", "deit_tiny_p4_32",
                                    "resmlp_12_p4_32"])
def test_the_initial_projectors_follow_the_originals_init_weights(config):
    ref = REF["init"]["configs"][config]
    name = config.split("_p4")[0].split("_32")[0]
    torch.manual_seed(0)
    distiller = build(make_cfg("ofa", beta=1.0), student(name), Width(ref["teacher_feature_dim"]))
    for s, stage in ref["per_stage"].items():
        assert sum(p.numel() for p in distiller.projector[s].parameters()) == stage["num_parameters"], s
    kinds = {}
    for s in ref["per_stage"]:
        for module in distiller.projector[s].modules():
            for kind, p in kinds_of(module):
                kinds.setdefault(kind, []).append(p.detach().flatten())
    for kind, stats in ref["per_kind"].items():
        values = torch.cat(kinds[kind.split(" ")[0]])
        assert len(values) == stats["count"], kind
        error = stats["std"] / len(values) ** 0.5  # (other draws of the same distribution: 5 standard errors)
        assert values.mean().item() == pytest.approx(stats["mean"], abs=5 * error + 1e-7), kind
        assert values.std().item() == pytest.approx(stats["std"], abs=5 * error / 2 ** 0.5 + 1e-7), kind


def kinds_of(module):
    """(the reference's kind, parameter) of a module's own parameters."""
    if isinstance(module, nn.Conv2d):
        yield ("depthwise_conv3x3_weight" if module.groups > 1 else "conv1x1_weight"), module.weight
        if module.bias is not None:
            yield "conv_bias", module.bias
    for cls, name in ((nn.BatchNorm2d, "batchnorm"), (nn.Linear, "linear"), (nn.LayerNorm, "layernorm")):
        if isinstance(module, cls):
            yield f"{name}_weight", module.weight
            if module.bias is not None:
                yield f"{name}_bias", module.bias
