"""A library model's own pretrained weights, by name, from the library's local cache only:

    model_t: torchvision:resnet50      path_t: torchvision:IMAGENET1K_V2   (a member of its weights enum, or DEFAULT)
    model_t: timm:vit_small_patch16_224  path_t: timm:augreg_in21k_ft_in1k (a pretrained tag; timm: its default)

Nothing is downloaded: torchvision's file must be in torch.hub's cache (`<TORCH_HOME>/hub/
checkpoints/`), timm's in the Hugging Face cache (`HF_HUB_CACHE`, default
`~/.cache/huggingface/hub`); a missing one is one line that says what to download. The weights
must be for the data set's classes (ImageNet's 1000), as any teacher's.
"""
import os

import torch

from common.errors import UserError

from .library import LIBRARIES


class NotCached(UserError):
    """Named pretrained weights absent from the local cache: a file to fetch, not a config mistake."""


def is_pretrained_name(path):
    """Whether `path` is `torchvision:WEIGHTS` / `timm:TAG` (and no file of that name exists)."""
    library, colon, _ = str(path).partition(":")
    return bool(colon) and library in LIBRARIES and not os.path.exists(path)


def pretrained_state_dict(model_name, path, model):
    """The state dict of `path`'s pretrained weights for `model` (built from `model_name`,
    ('torchvision' | 'timm', NAME) or None for a zoo model)."""
    library, tag = path.split(":", 1)
    if model_name is None or model_name[0] != library:
        raise UserError(f"path_t {path} names {library}'s pretrained weights, but model_t is not a {library} model: "
                        f"set model_t {library}:NAME")
    return (torchvision_weights if library == "torchvision" else timm_weights)(model_name[1], tag, model)


def torchvision_weights(name, tag, model):
    import torchvision
    enum = torchvision.models.get_model_weights(name)
    try:
        weights = enum[tag or "DEFAULT"]
    except KeyError:
        raise UserError(f"torchvision's {name} has no weights '{tag}': one of {', '.join(enum.__members__)}") from None
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    file = os.path.join(folder, os.path.basename(weights.url))
    if not os.path.isfile(file):
        raise NotCached(f"torchvision's {weights} are not in the local cache: download {weights.url} into "
                        f"{folder}/ (torch.hub's cache)")
    return torch.load(file, map_location="cpu", weights_only=True)


def timm_weights(name, tag, model):
    import timm
    from huggingface_hub import try_to_load_from_cache
    full = f"{name}.{tag}" if tag else name
    config = timm.models.get_pretrained_cfg(full)
    if config is None or not config.hf_hub_id:
        raise UserError(f"timm has no pretrained weights '{full}': see timm.list_pretrained('{name}*')")
    repo = config.hf_hub_id.split("@")[0]
    files = [try_to_load_from_cache(repo, f, cache_dir=os.environ.get("HF_HUB_CACHE"))
             for f in ("model.safetensors", "pytorch_model.bin")]
    file = next((f for f in files if isinstance(f, str)), None)
    if file is None:
        raise NotCached(f"timm's {full} weights are not in the local Hugging Face cache: run `hf download {repo}` "
                        f"where there is internet, then copy the cache (HF_HUB_CACHE) here")
    classes = model.get_classifier().out_features
    if config.num_classes and config.num_classes != classes:
        raise UserError(f"timm's {full} weights classify {config.num_classes} classes, the data set has {classes}: "
                        f"use a teacher trained on this data set")
    fresh = timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": file}, num_classes=classes,
                              **model.build_kwargs)
    return fresh.state_dict()
