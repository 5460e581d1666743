"""The model zoo against the reference figures of the original implementation (CRD's CIFAR
zoo, run in float64 on the CPU): parameter counts, state-dict keys and shapes in order, and the
logits and feature statistics under `fill_deterministic` / `fixed_input`, in train and eval
mode, with and without `preact`. Plus a float32 forward/backward smoke test per model.
"""
import json
from pathlib import Path

import pytest
import torch

from models import model_dict
from tests.deterministic import fill_deterministic, fixed_input

REF_DIR = Path(__file__).parent / "reference" / "zoo"
NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet18", "ResNet34", "ResNet50",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
]


def load_reference(name):
    return json.loads((REF_DIR / f"{name}.json").read_text())


def test_model_dict_names():
    imagenet = ["resnet18_imagenet", "resnet34_imagenet", "resnet50_imagenet", "MobileNetV1"]  # tests/test_imagenet_models.py
    tiny = ["MobileNetV2_tiny"]  # tests/test_tiny_imagenet.py
    assert sorted(model_dict) == sorted(NAMES + imagenet + tiny)


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    """(name, float64 model, its filled state, reference figures), built and filled once per name."""
    name = request.param
    model = fill_deterministic(model_dict[name](num_classes=100).double())
    filled = {k: v.clone() for k, v in model.state_dict().items()}
    return name, model, filled, load_reference(name)


def test_params_and_state_dict(built):
    name, model, _, ref = built
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == [(k, shape) for k, shape in ref["state_dict"].items()]


def _forward(model, filled, train, preact):
    model.load_state_dict(filled)  # a fresh fill: undo the running statistics of earlier passes
    model.train(train)
    with torch.no_grad():
        return model(fixed_input(4), is_feat=True, preact=preact)


def _check_stats(feats, ref_feats, what):
    assert len(feats) == len(ref_feats), what
    for i, (f, r) in enumerate(zip(feats, ref_feats)):
        assert list(f.shape) == r["shape"], f"{what}[{i}] shape"
        ours = torch.stack([f.mean(), f.std(), f.abs().mean()])
        theirs = torch.tensor([r["mean"], r["std"], r["abs_mean"]], dtype=torch.float64)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9, msg=lambda m: f"{what}[{i}]: {m}")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_match_reference(built, mode):
    name, model, filled, ref = built
    ref = ref[mode]
    feats, logits = _forward(model, filled, mode == "train", preact=False)
    torch.testing.assert_close(logits, torch.tensor(ref["logits"], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    _check_stats(feats, ref["feats"], f"{name} {mode} feats")
    pre_feats, pre_logits = _forward(model, filled, mode == "train", preact=True)
    torch.testing.assert_close(pre_logits, logits, rtol=0, atol=0)
    _check_stats(pre_feats, ref["preact_feats"], f"{name} {mode} preact_feats")


@pytest.mark.parametrize("name", NAMES)
def test_float32_forward_backward(name):
    torch.manual_seed(0)
    model = model_dict[name](num_classes=100).train()
    x = torch.randn(2, 3, 32, 32)
    feats, logits = model(x, is_feat=True)
    assert logits.shape == (2, 100) and logits.dtype == torch.float32
    assert model(x).shape == (2, 100)
    (logits.square().mean() + sum(f.mean() for f in feats)).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert isinstance(model.get_feat_modules(), torch.nn.ModuleList)
    if hasattr(model, "get_bn_before_relu"):  # CRD has none for the ShuffleNets
        bns = model.get_bn_before_relu()
        assert all(isinstance(bn, torch.nn.BatchNorm2d) for bn in bns)
        assert [bn.num_features for bn in bns] == [f.shape[1] for f in feats[1:1 + len(bns)]]
