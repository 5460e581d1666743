"""The contract of every model (the zoo, and torchvision / timm models) beyond its logits: what
the methods that reuse or reshape the classifier (SimKD, CAT-KD, SDD, SRD) read, and what the
heterogeneous methods (OFA-KD) read of a model's stages.

    feats, logits, pooled_map = model(x, is_feat=True, pooled_map=True)
    weight, bias = classifier_weights(model)      # [classes, channels], [classes] or None

`pooled_map` is the map that the global average pooling before the classifier reads, N x C x H x W:
not always `feats[-2]` (WRN: relu(bn1(.)) of the last block's output; ShuffleV2: after its last
1x1 convolution, 1024 channels against feats[-2]'s 464; MobileNetV2: 1280 against 160). `classifier`
is the final layer, whatever the original named it (`fc`, `linear`, `classifier`, MobileNetV2_tiny's
1x1 convolution); for the zoo, logits = classifier(mean of pooled_map over H x W). A library model
whose head does more than one linear layer on the pooled map (torchvision's MobileNetV3), or that
has no map (a ViT), gives `reads_pooled_map(model)` False.
"""
import dataclasses

import torch
import torch.nn as nn

from common.errors import UserError


def classifier(model):
    """The final classification layer: the last nn.Linear or 1x1 nn.Conv2d the model registers
    (tests/test_model_contract.py checks it is the one that gives the logits, for every model)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) or
              (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1)]
    if not layers:
        raise UserError(f"{type(model).__name__} has no linear classifier")
    return layers[-1]


def classifier_weights(model):
    """(weight [classes, channels], bias [classes] or None) of `classifier(model)`."""
    layer = classifier(model)
    return layer.weight.flatten(1), layer.bias


def forward_with_map(model, x, preact=False):
    """(feats, logits, pooled_map) of `model`, or a one-line refusal when it does not keep the contract."""
    try:
        return model(x, is_feat=True, preact=preact, pooled_map=True)
    except TypeError as e:
        if "pooled_map" not in str(e):
            raise
        raise UserError(f"{type(model).__name__} does not give the map its classifier pools (forward(..., "
                        f"pooled_map=True), models/contract.py): choose a model of the zoo or of a library") from None


def reads_pooled_map(model, feats, pooled_map):
    """Whether the classifier reads the pooled map directly (its channels are the map's)."""
    return pooled_map is not None and pooled_map.dim() == 4 and \
        classifier_weights(model)[0].shape[1] == pooled_map.shape[1] and feats[-1].shape[1] == pooled_map.shape[1]


@torch.no_grad()
def smallest_trainable_batch(model, size):
    """1, or 2 when one of the model's BatchNorms sees a single value per channel for one image of
    side `size` (a 1x1 map, or a pooled vector): training mode cannot normalise that, so a final
    batch of one image cannot be trained (timm's resnet18 at 32 pixels ends in a 1x1 map)."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(args[0].numel() // args[0].shape[1]))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return 2 if 1 in seen else 1


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """What a model's stages are: `kind` "cnn" (each stage a B x C x H x W map) or "tokens" (B x L x D,
    its `prefix` class or distillation tokens first, then the patches); `count` stages."""
    kind: str
    prefix: int
    count: int


def stage_layout(model):
    """The StageLayout of `model`: a library adapter says its own (a timm ViT, MLP-Mixer or Swin is a
    token model); the zoo's and torchvision's CNNs: their stage maps, feats[1:-1], the 4 deepest."""
    own = getattr(model, "stage_layout", None)
    if own is not None:
        return own()
    param = next(model.parameters())
    size = getattr(model, "input_size", 32)
    with torch.no_grad():
        was_training = model.training
        feats, _ = model.eval()(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device), is_feat=True)
        model.train(was_training)
    return StageLayout("cnn", 0, len(cnn_stages(feats)))


def cnn_stages(feats):
    """The stage maps of a feature list of the zoo's form: after the stem map, before the pooled
    vector, the 4 deepest."""
    return [f for f in feats[1:-1] if f.dim() == 4][-4:]


def forward_stages(model, image):
    """(the stage tensors of stage_layout(model), the logits) of one forward pass, in the model's mode."""
    own = getattr(model, "stage_outputs", None)
    if own is not None:
        return own(image)
    feats, logits = model(image, is_feat=True)
    return cnn_stages(feats), logits
