"""The ImageNet models: torchvision's ResNets key for key and logit for logit, mdistiller's
MobileNetV1 against figures measured on its own code (tests/reference/zoo/MobileNetV1_mdistiller.json),
and the zoo's feature interface on all four."""
import json
from pathlib import Path

import pytest
import torch
import torchvision

from models import model_dict
from tests.deterministic import fill_deterministic

RESNETS = {"resnet18_imagenet": torchvision.models.resnet18, "resnet34_imagenet": torchvision.models.resnet34,
           "resnet50_imagenet": torchvision.models.resnet50}
NAMES = [*RESNETS, "MobileNetV1"]
MV1_REFERENCE = Path(__file__).parent / "reference" / "zoo" / "MobileNetV1_mdistiller.json"


def image(size, batch=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def pair(name):
    """Ours and torchvision's, built without initialising (on the meta device)."""
    with torch.device("meta"):
        return model_dict[name](num_classes=1000), RESNETS[name](weights=None)


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_keys_equal_torchvision(name):
    ours, theirs = pair(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in theirs.state_dict().items()]


@pytest.mark.parametrize("name", ["resnet18_imagenet", "resnet50_imagenet"])  # basic and bottleneck blocks
def test_resnet_logits_equal_torchvision(name):
    ours, theirs = (m.to_empty(device="cpu").double() for m in pair(name))
    filled = fill_deterministic(ours).state_dict()
    theirs.load_state_dict(filled, strict=True)
    x = image(64)
    for train in (False, True):
        ours.load_state_dict(filled)
        theirs.load_state_dict(filled)
        with torch.no_grad():
            feats, logits = ours.train(train)(x, is_feat=True)
            expected = theirs.train(train)(x)
        torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours.fc(feats[-1]), logits, rtol=1e-12, atol=1e-12)


def test_mobilenetv1_equals_mdistiller():
    ref = json.loads(MV1_REFERENCE.read_text())
    model = fill_deterministic(model_dict["MobileNetV1"](num_classes=1000).double())
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(ref["state_dict"].items())
    filled = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in ("train", "eval"):
        for preact in (False, True):
            model.load_state_dict(filled)
            with torch.no_grad():
                feats, logits = model.train(mode == "train")(image(224), is_feat=True, preact=preact)
            want = ref[mode]
            torch.testing.assert_close(logits[:, :5], torch.tensor(want["logits_first"], dtype=torch.float64),
                                       rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(logits.sum().item(), want["logits_sum"], rtol=1e-6, atol=1e-9)
            # mdistiller's four maps are ours 1..4 (ours add the stem in front); then the pooled vector
            ref_maps = want["preact_feats" if preact else "feats"] + [want["pooled"]]
            for f, r in zip(feats[1:], ref_maps, strict=True):
                assert list(f.shape) == r["shape"]
                ours = [f.mean().item(), f.std().item(), f.abs().mean().item()]
                torch.testing.assert_close(ours, [r["mean"], r["std"], r["abs_mean"]], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["resnet18_imagenet", "resnet50_imagenet", "MobileNetV1"])
def test_zoo_interface(name):
    torch.manual_seed(0)
    model = model_dict[name](num_classes=10).train()
    assert model.input_size == 224
    x = torch.randn(2, 3, 64, 64)
    feats, logits = model(x, is_feat=True)
    pre_feats, pre_logits = model(x, is_feat=True, preact=True)
    assert logits.shape == (2, 10) and torch.equal(model(x), logits) and torch.equal(pre_logits, logits)
    # the stem at half the input size, four stages from a quarter down to 1/32, the pooled vector
    assert [f.shape[-1] for f in feats[:-1]] == [32, 16, 8, 4, 2]
    assert feats[-1].shape == (2, model.fc.in_features)
    torch.testing.assert_close(model.fc(feats[-1]), logits)
    for f, p in zip(feats[:-1], pre_feats[:-1], strict=True):
        assert torch.equal(f, p.relu()) and (p < 0).any()
    bns = model.get_bn_before_relu()  # mdistiller's: stages 2-4 of the ResNets, all four of MobileNetV1
    assert len(bns) == (4 if name == "MobileNetV1" else 3)
    assert [bn.num_features for bn in bns] == [f.shape[1] for f in feats[1:-1][-len(bns):]]
    assert isinstance(model.get_feat_modules(), torch.nn.ModuleList)
    (logits.square().mean() + sum(f.mean() for f in feats)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
