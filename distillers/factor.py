"""FT: Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer"
(NeurIPS 2018).

A paraphraser (encoder: three 3x3 convs, each followed by LeakyReLU(0.1), down to k = 1/2 of the
teacher's channels; decoder: the mirror image in transposed convs; no BN) first learns to
reconstruct the teacher's feats[-2] in an init stage of init_epochs:

    L_init = mean((decoder(encoder(f_t)) - f_t)^2)

trained alone (the student does not run) at learning rate 0.01 when the student is one of
CRD's CIFAR ResNets/WRNs (the original's list), else at the config's. Then a translator (the
same encoder shape with BN, from the student's feats[-2]) is trained with the student on

    L = mean |F(translator(f_s)) - F(encoder(f_t))|,   F(x) = normalize(flatten(mean_c x_c^2))

the larger factor map average-pooled to the smaller first. The paraphraser is kept as trained,
outside the main optimizer; having no BN, it computes the same in train mode (this loop) as in
eval mode (the original's main loop).

Refused: init_epochs 0 (the translator would chase an untrained paraphraser).
Per-sample terms: any batch size works.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError

from .base import Distiller, InitStage
from .functional import attention_map, pool_to_smaller

# the students for which the original trains the paraphraser at 0.01 (helper/pretrain.py)
CIFAR_RESNETS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                 "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")


def conv_stack(conv, channels, bn):
    """3x3 `conv` (stride 1, padding 1) -> BN (or nothing) -> LeakyReLU(0.1), from channels[0]
    through each of channels[1:]; three slots per layer, so the keys are the original's."""
    layers = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out) if bn else nn.Identity(),
                   nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class FT(Distiller):
    k = 0.5  # factor channels per teacher channel

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        if cfg.init_epochs < 1:
            raise UserError("FT's paraphraser is trained only in its init stage: set init_epochs "
                            "to 1 or more (30 in the paper's code)")
        channels_s = self.probe_feats(student)[-2].shape[1]
        channels_t = self.probe_feats(teacher)[-2].shape[1]
        factors = int(channels_t * self.k)
        # ModuleDicts with the original's module names (encoder, decoder): the same keys
        self.paraphraser = nn.ModuleDict({
            "encoder": conv_stack(nn.Conv2d, [channels_t, channels_t, factors, factors], bn=False),
            "decoder": conv_stack(nn.ConvTranspose2d, [factors, factors, channels_t, channels_t], bn=False)})
        self.paraphraser.requires_grad_(False)  # trained in the init stage only
        self.translator = nn.ModuleDict({
            "encoder": conv_stack(nn.Conv2d, [channels_s, channels_s, factors, factors], bn=True)})
        self.init_lr = 0.01 if cfg.model_s in CIFAR_RESNETS else None

    def factor_loss(self, feat_s, feat_t):
        """L above, for the student's and the teacher's feats[-2]."""
        factor_s, factor_t = pool_to_smaller(self.translator.encoder(feat_s), self.paraphraser.encoder(feat_t))
        return (attention_map(factor_s) - attention_map(factor_t)).abs().mean()

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"ft": self.factor_loss(feats_s[-2], feats_t[-2])}

    def init_stage(self):
        return InitStage(self.paraphraser, self.init_losses, self.init_lr)

    def init_losses(self, image, target, index=None):
        with torch.no_grad():
            feats_t, _ = self.teacher(image, is_feat=True)
        f_t = feats_t[-2]
        return {"ft_init": F.mse_loss(self.paraphraser.decoder(self.paraphraser.encoder(f_t)), f_t)}
