"""OFA-KD: Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures in Knowledge
Distillation" (NeurIPS 2023); what github Hao840/OFAKD computes (`distillers/ofa.py`,
`distillers/utils.py`), between CNN, ViT and MLP students and teachers.

Each chosen stage s of the student (`ofa_stage`, its stages as models/contract.py gives them) gets a
projector P_s to the logit space, and every head is taught the teacher's logits by the OFA loss,
with p = softmax(z / T) (T `ofa_temperature`) and m the one-hot label:

    OFA(z_s, z_t; eps) = mean over the batch of sum_c -[(p_t + m)^eps - m]_c log p_s,c

eps > 1 enhances the target class ((1 + p_t,y)^eps - 1) against the others (p_t,c^eps); no T^2.
L_method = OFA(student logits; eps_last) + ofa_loss_weight sum_s OFA(P_s(stage s); eps_s), weighted
by beta (the original's kd_loss_weight, 1) beside gamma CE (its gt_loss_weight, 1); `ofa_eps` is one
value or one per stage plus the last for the logits.
- CNN student: 4 - s separable-conv blocks (each halves the map; channels doubling from the stage's,
  the last to D = the wider of the student's and the teacher's pre-logit widths; stage 4 a 1x1
  conv to D), global pooling, a linear layer to the classes.
- token student (ViT, MLP-Mixer, Swin): log2(grid / 7) patch mergings (grid the square root of the
  tokens, class token counted, as the original), max(4 - s, 1) timm transformer blocks of the
  student's pre-logit width and 4 heads (LayerNorm eps 1e-5, timm 0.6.5's), the class token (or,
  without one, the mean of the tokens), a linear layer. The class token is kept apart from the
  mergings, as the original's TokenFnContext intends (under timm 0.6.5, whose ViT has no
  `num_tokens`, its code merges the class token as a patch: docs/departures.md).
The projectors' keys and shapes are the original's (`projector.<stage>.` + its ModuleDict's), and
their initial values follow its `init_weights`. With Mixup's soft labels m is the one-hot of their
largest entry, as there. Refused: a stage the student lacks, an eps list of another length, a
student with two prefix tokens (DeiT's distilled ViT: the original's head cannot take two).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from common.knobs import Knob, Rule, linear_range, log_range, positive
from models.contract import forward_stages, stage_layout

from .base import Distiller

stages_rule = Rule(lambda v: len(v) > 0 and all(s >= 1 and s == int(s) for s in v) and len(set(v)) == len(v),
                   "distinct stage numbers from 1, e.g. 1,2,3,4", ([0.0], [1.0, 1.0], [1.5]))
eps_rule = Rule(lambda v: len(v) > 0 and all(e > 0 for e in v), "positive, one value or one per stage and the logits",
                ([0.0], [-1.0]))


def ofa_loss(logits_s, logits_t, target_class, eps, T):
    """OFA(z_s, z_t; eps) of the module docstring (the student's log-probabilities in log space)."""
    log_p_s = F.log_softmax(logits_s / T, dim=1)
    p_t = F.softmax(logits_t / T, dim=1)
    m = F.one_hot(target_class, logits_s.shape[1]).to(p_t.dtype)
    return (-((p_t + m) ** eps - m) * log_p_s).sum(dim=1).mean()


class SepConv(nn.Module):
    """Depthwise 3x3 (stride 2) and pointwise convolutions, BatchNorm, ReLU, twice (the original's)."""

    def __init__(self, channels_in, channels_out):
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(channels_in, channels_in, 3, stride=2, padding=1, groups=channels_in, bias=False),
            nn.Conv2d(channels_in, channels_in, 1, bias=False), nn.BatchNorm2d(channels_in), nn.ReLU(),
            nn.Conv2d(channels_in, channels_in, 3, stride=1, padding=1, groups=channels_in, bias=False),
            nn.Conv2d(channels_in, channels_out, 1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU())

    def forward(self, x):
        return self.op(x)


class PatchMerging(nn.Module):
    """2x2 neighbouring patches concatenated (row offset first), LayerNorm, a linear map, `act`."""

    def __init__(self, side, dim, out_dim, act):
        super().__init__()
        self.side = side
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.act = act()

    def forward(self, x):
        x = x.view(x.shape[0], self.side, self.side, x.shape[2])
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.act(self.reduction(self.norm(x.flatten(1, 2))))


class TokenFnContext(nn.Module):
    """`fn` on the patch tokens only, the first `prefix` tokens (the class token) kept in front."""

    def __init__(self, prefix, fn):
        super().__init__()
        self.prefix, self.fn = prefix, fn

    def forward(self, x):
        return torch.cat([x[:, :self.prefix], self.fn(x[:, self.prefix:])], dim=1)


class TokenHead(nn.Module):
    """The class token (flattened), or the mean of the tokens when there is none."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def forward(self, x):
        return x[:, :self.prefix].flatten(1) if self.prefix else x.mean(dim=1)


def cnn_projector(stage, channels, width, classes):
    layers = []
    if stage < 4:
        for i in range(4 - stage):
            out = width if i == 3 - stage else channels * 2
            layers.append(SepConv(channels, out))
            channels *= 2
    else:
        layers.append(nn.Conv2d(channels, width, 1))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def token_projector(stage, tokens, dim, width, prefix, classes):
    from timm.models.vision_transformer import Block
    grid = int(tokens ** 0.5)
    merges = max(int(math.log2(grid / 7)), 0)
    if merges and (tokens - prefix != grid ** 2 or grid % 2 ** merges):
        raise UserError(f"OFA-KD merges the student's {tokens - prefix} patch tokens as a {grid}x{grid} grid, which "
                        f"they do not form: choose another ofa_stage or input size")
    if not merges and dim != width:
        raise UserError(f"OFA-KD's blocks take the student's pre-logit width {width}, but its stage has {dim}-wide "
                        f"tokens and no patch merging: choose another ofa_stage")
    mergers = [PatchMerging(grid // 2 ** i, dim if i == 0 else width, width,
                            nn.GELU if i == 0 or i != merges - 1 else nn.Identity) for i in range(merges)]
    blocks = [Block(dim=width, num_heads=4, norm_layer=nn.LayerNorm) for _ in range(max(4 - stage, 1))]
    return nn.Sequential(TokenFnContext(prefix, nn.Sequential(*mergers)), nn.Sequential(*blocks), TokenHead(prefix),
                         nn.Linear(width, classes))


def init_weights(module):
    """The original's init_weights: convolutions Kaiming normal (fan out, ReLU), BatchNorm 1 and 0,
    linear layers truncated normal (std 0.02) and bias 0; the rest as PyTorch makes them."""
    from timm.layers import trunc_normal_
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class OFA(Distiller):
    knobs = (
        Knob("ofa_stage", [1.0, 2.0, 3.0, 4.0], "OFA-KD: the student's stages that get a projector head", stages_rule),
        Knob("ofa_eps", [1.0], "OFA-KD: target enhancement exponent, one value or one per stage and last the "
                               "logits'", eps_rule),
        Knob("ofa_temperature", 1.0, "OFA-KD: the temperature of its loss (no T^2)", positive,
             space=linear_range(1.0, 8.0)),
        Knob("ofa_loss_weight", 1.0, "OFA-KD: the weight of its stage heads' losses (beta weighs all)", positive,
             space=log_range(0.1, 10.0)),
    )
    teacher_reads = ("logits",)
    check_settings = {"ofa_stage": [1.0, 2.0, 3.0]}  # the zoo's CIFAR ResNets have three stages

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.stages = [int(s) for s in cfg.ofa_stage]
        eps = [float(e) for e in cfg.ofa_eps]
        if len(eps) not in (1, len(self.stages) + 1):
            raise UserError(f"ofa_eps takes one value or {len(self.stages) + 1} (one per stage of ofa_stage and the "
                            f"logits'), got {len(eps)}")
        self.eps = eps * (len(self.stages) + 1) if len(eps) == 1 else eps
        self.T, self.loss_weight = float(cfg.ofa_temperature), float(cfg.ofa_loss_weight)
        layout = stage_layout(student)
        beyond = [s for s in self.stages if s > layout.count]
        if beyond:
            raise UserError(f"ofa_stage {', '.join(map(str, beyond))}: the student {type(student).__name__} has "
                            f"{layout.count} stages: set ofa_stage {','.join(map(str, range(1, layout.count + 1)))}")
        if layout.kind == "tokens" and layout.prefix > 1:
            raise UserError(f"OFA-KD's token head reads one class token, and the student {type(student).__name__} "
                            f"has {layout.prefix} (a distilled ViT): choose a student without a distillation token")
        shapes, classes = self.probe_stages(student)
        width_s, width_t = (self.probe_feats(m)[-1].shape[1] for m in (student, teacher))
        self.projector = nn.ModuleDict()
        for s in self.stages:
            shape = shapes[s - 1]
            self.projector[str(s)] = (cnn_projector(s, shape[0], max(width_s, width_t), classes)
                                      if layout.kind == "cnn" else
                                      token_projector(s, shape[0], shape[1], width_s, layout.prefix, classes))
        self.projector.apply(init_weights)

    @staticmethod
    @torch.no_grad()
    def probe_stages(model):
        """(the shapes, batch left out, of the model's stage tensors, its class count), from a dry
        pass in eval mode."""
        param = next(model.parameters())
        size = getattr(model, "input_size", 32)
        was_training = model.training
        stages, logits = forward_stages(model.eval(), torch.zeros(2, 3, size, size, dtype=param.dtype,
                                                                  device=param.device))
        model.train(was_training)
        return [tuple(t.shape[1:]) for t in stages], logits.shape[1]

    def student_features(self, image):
        return forward_stages(self.student, image)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        target_class = target.argmax(dim=-1) if target.is_floating_point() else target  # Mixup: its largest share
        heads = [ofa_loss(self.projector[str(s)](feats_s[s - 1]), logits_t, target_class, eps, self.T)
                 for s, eps in zip(self.stages, self.eps)]
        return {"ofa_logits": ofa_loss(logits_s, logits_t, target_class, self.eps[-1], self.T),
                "ofa": self.loss_weight * sum(heads)}
