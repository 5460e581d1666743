"""CRD: Tian, Krishnan & Isola, "Contrastive Representation Distillation" (ICLR 2020).

Both last features (feats[-1]) are embedded to feat_dim by a trainable linear map and
L2-normalised: v_s, v_t. Two memory banks hold one feat_dim vector per training sample
(memory_s for the student side, memory_t for the teacher side). For a sample with contrast
indices j_0 (its positive) .. j_K (nce_k negatives of other classes):

    out_s[k] = exp(<memory_t[j_k], v_s> / nce_t) / Z_s,   out_t[k] = exp(<memory_s[j_k], v_t> / nce_t) / Z_t

with Z = mean(exp scores) * N fixed on the first batch; the loss is NCE with noise probability
1/N on each side (`functional.nce_loss`), student side plus teacher side. After the scores, the
rows of the batch's own indices move: memory[i] <- normalize(nce_m * memory[i] + (1 - nce_m) * v).
Memories and Z are buffers: they are saved in the distiller's state_dict, so resume is exact.

Refused: nce_k above the negatives a sample has (the training samples of other classes).
nce_t > 0, 0 <= nce_m < 1 and feat_dim > 0 are the knobs' rules. Any batch size works: every
score is of one sample against the memory.
"""
import torch
import torch.nn as nn

from common.collectives import all_gather_cat, all_reduce_sum, world_size
from common.knobs import Knob, in_range, log_range, one_of, positive

from .base import Distiller
from .cc import FEAT_DIM, LinearEmbed
from .crd_sampling import ContrastSampler
from .functional import nce_loss


class ContrastMemory(nn.Module):
    """The two memory banks, the normalisation constants and CRD's NCE loss.

    `forward(v_s, v_t, contrast_index)` gives the two losses and `update(v_s, v_t, index)` moves
    the memory; both take explicit tensors (all-gathered ones under DDP)."""

    def __init__(self, n_data, feat_dim, nce_t=0.07, nce_m=0.5):
        super().__init__()
        self.n_data, self.nce_t, self.nce_m = int(n_data), float(nce_t), float(nce_m)
        stdv = 1.0 / (feat_dim / 3) ** 0.5
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim) * 2 * stdv - stdv)
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim) * 2 * stdv - stdv)
        self.register_buffer("z", torch.full((2,), -1.0))               # (Z_s, Z_t); < 0: unset
        self.z_checked = False  # whether z is known to be set (checked once: it costs a sync)

    def scores(self, v_s, v_t, contrast_index):
        """Normalised scores (B, 1 + K): the student anchor against memory_t, and the teacher
        anchor against memory_s. Sets Z from this batch if not yet set."""
        with torch.autocast(v_s.device.type, enabled=False):
            exp_s = self._exp_scores(self.memory_t, v_s, contrast_index)
            exp_t = self._exp_scores(self.memory_s, v_t, contrast_index)
            if not self.z_checked:
                if (self.z < 0).any():  # the first batch of the run: under DDP, of every rank
                    first = torch.stack([exp_s.mean(), exp_t.mean()]).detach() * self.n_data
                    self.z.copy_(all_reduce_sum(first) / world_size())
                self.z_checked = True
            return exp_s / self.z[0], exp_t / self.z[1]

    def _exp_scores(self, memory, v, contrast_index):
        """exp(<memory[j], v_b> / nce_t) for j in contrast_index[b]: one (N, B) product and a
        gather, much cheaper than gathering B * (1 + K) memory rows. The backward needs the
        memory as it is now, and `update` changes it in place before the backward: the product
        then runs on a copy (N x feat_dim, small beside the rows a gather would copy)."""
        if v.requires_grad:
            memory = memory.clone()
        scores = (memory @ v.to(memory.dtype).t()).t().gather(1, contrast_index)
        return torch.exp(scores / self.nce_t)

    def forward(self, v_s, v_t, contrast_index):
        """(student-side loss, teacher-side loss)."""
        out_s, out_t = self.scores(v_s, v_t, contrast_index)
        return nce_loss(out_s, self.n_data), nce_loss(out_t, self.n_data)

    @torch.no_grad()
    def update(self, v_s, v_t, index):
        for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            rows = memory.index_select(0, index) * self.nce_m + v.to(memory.dtype) * (1 - self.nce_m)
            memory.index_copy_(0, index, rows / rows.pow(2).sum(1, keepdim=True).sqrt())


class Embed(LinearEmbed):
    """CRD's Embed: linear map of the flattened feature, then L2 normalisation."""

    def forward(self, x):
        x = super().forward(x)
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


class CRD(Distiller):
    teacher_reads = ("logits", "embedding")  # of its features, feats[-1] only
    knobs = (
        FEAT_DIM,
        Knob("mode", "exact", "CRD positive: exact (the sample itself) or relax (a same-class sample)",
             one_of("exact", "relax")),
        Knob("nce_k", 16384, "CRD: negatives per sample", positive),
        Knob("nce_t", 0.07, "CRD: temperature", positive, space=log_range(0.03, 0.3)),
        Knob("nce_m", 0.5, "CRD: momentum of the memory update", in_range(0, 1)),
    )
    # the battery's 128 images have about 126 negatives each; on its one repeated batch the memory
    # rows move toward the batch's own embeddings, and at 128-d the negatives' scores rise faster
    # than 20 steps teach the student (at 32-d they do not)
    check_settings = {"nce_k": 64, "feat_dim": 32}

    @classmethod
    def reads_labels(cls, cfg):
        return True  # its negatives are drawn by class

    def __init__(self, student, teacher, cfg, train_targets=None):
        super().__init__(student, teacher, cfg)
        if train_targets is None:
            raise ValueError("CRD needs train_targets: the labels of the training set")
        self.sampler = ContrastSampler(train_targets, cfg.nce_k, cfg.mode)
        dim_s = self.probe_feats(student)[-1][0].numel()
        dim_t = self.probe_feats(teacher)[-1][0].numel()
        self.embed_s = Embed(dim_s, cfg.feat_dim)
        self.embed_t = Embed(dim_t, cfg.feat_dim)
        self.memory = ContrastMemory(self.sampler.n_data, cfg.feat_dim, cfg.nce_t, cfg.nce_m)

    def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
        if index is None:
            raise ValueError("CRD needs the batch's indices into the training set")
        v_s, v_t = self.embed_s(feats_s[-1]), self.embed_t(feats_t[-1])
        loss_s, loss_t = self.memory(v_s, v_t, self.sampler(index, target))
        # every rank moves the memory rows of the whole global batch, so the memories stay equal
        self.memory.update(all_gather_cat(v_s.detach()), all_gather_cat(v_t.detach()), all_gather_cat(index))
        return {"crd": loss_s + loss_t}
