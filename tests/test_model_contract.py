"""The classifier contract (models/contract.py) for every model of the zoo and the library
adapters: `pooled_map=True` gives the map the classifier pools, `classifier` is the layer that
makes the logits from it, and nothing else of the forward changes."""
import pytest
import torch
import torch.nn.functional as F

from models import build_model, model_dict
from models.contract import classifier, classifier_weights, forward_with_map, reads_pooled_map

# the maps that are not feats[-2] (what SimKD projects is feats[-2]; CAT-KD and SDD use the pooled map)
NOT_FEATS_2 = {"wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "MobileNetV2", "ShuffleV2"}


@pytest.mark.parametrize("name", list(model_dict))
def test_every_zoo_model_gives_the_map_its_classifier_pools(name):
    torch.manual_seed(0)
    model = model_dict[name](num_classes=10).double().eval()
    size = getattr(model, "input_size", 32)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        feats, logits, the_map = forward_with_map(model, x)
        plain_feats, plain_logits = model(x, is_feat=True)
        weight, bias = classifier_weights(model)
    assert torch.equal(logits, plain_logits) and all(torch.equal(a, b) for a, b in zip(feats, plain_feats))
    torch.testing.assert_close(F.linear(the_map.mean((2, 3)), weight, bias), logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(the_map.mean((2, 3)), feats[-1].flatten(1), rtol=1e-9, atol=1e-9)
    assert reads_pooled_map(model, feats, the_map)
    assert (the_map.shape != feats[-2].shape or not torch.equal(the_map, feats[-2])) == (name in NOT_FEATS_2)
    assert classifier(model).weight.shape[0] == 10


@pytest.mark.parametrize("name, reads", [("torchvision:resnet18", True), ("torchvision:mobilenet_v3_small", False),
                                         ("timm:resnet18", True), ("timm:vit_tiny_patch16_224", False)])
def test_library_models_keep_the_contract_or_say_they_cannot(name, reads):
    torch.manual_seed(0)
    model = build_model(name, 10, 32, {"depth": 1} if "vit" in name else {}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats, logits, the_map = forward_with_map(model, x)
    torch.testing.assert_close(logits, model(x), rtol=0, atol=1e-6)
    assert reads_pooled_map(model, feats, the_map) == reads
    if reads:
        weight, bias = classifier_weights(model)
        torch.testing.assert_close(F.linear(the_map.mean((2, 3)), weight, bias), logits, rtol=1e-5, atol=1e-5)
