"""SRD: Miles & Mikolajczyk, "Understanding the Role of the Projector in Knowledge Distillation"
(AAAI 2024); github roymiles/Simple-Recipe-Distillation, `imagenet/torchdistill/losses/single.py`
(`OurDistillationLoss`) with `imagenet/configs/ilsvrc2012/ours/res3418.yaml`; torchdistill's
`SRDLoss` computes the same, bit for bit (tests/reference/README.md).

On the pooled embeddings z = feats[-1] (the vector each classifier reads):

    L_srd = 2 log sum_{b, d} |BN(W z_s + c) - BN(z_t)|^p,      p = srd_exponent (4)

with W, c a linear projector on the student's side (to the teacher's width) and BN a batch
normalisation without affine parameters, eps 1e-4, on the batch's own statistics on both sides
(the original never switches its criterion to eval mode; here no running statistics are kept at
all). The original's recipe adds KD at T = 1 (alpha 1, kd_T 1) and CE (gamma 1). Quirk, kept: the
log of a sum, not of a mean, so the value grows with log(B x d) (its gradient S'/S does not).

Needs at least 2 samples in a batch (`min_batch`: one sample's batch statistics make every
normalised value 0); a smaller final batch is dropped, a smaller batch_size refused.
"""
import torch.nn as nn
import torch.nn.functional as F

from common.knobs import Knob, positive

from .base import Distiller

EPS = 1e-4


def batch_standardize(x):
    """BatchNorm1d without affine parameters on the batch's own (biased) statistics."""
    return F.batch_norm(x, None, None, training=True, momentum=0.0, eps=EPS)


def srd_loss(projected_s, z_t, exponent):
    return 2.0 * (batch_standardize(projected_s) - batch_standardize(z_t)).abs().pow(exponent).sum().log()


class SRD(Distiller):
    teacher_reads = ("logits", "embedding")  # of its features, feats[-1] only
    knobs = (Knob("srd_exponent", 4.0, "SRD: exponent p of the distance between the normalised embeddings",
                  positive),)
    min_batch = 2  # batch statistics

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        self.exponent = float(cfg.srd_exponent)
        dim_s = self.probe_feats(student)[-1][0].numel()
        dim_t = self.probe_feats(teacher)[-1][0].numel()
        self.embed = nn.Linear(dim_s, dim_t)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        return {"srd": srd_loss(self.embed(feats_s[-1].flatten(1)), feats_t[-1].flatten(1), self.exponent)}
