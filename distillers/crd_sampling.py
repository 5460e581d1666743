"""CRD's contrast indices drawn on the training device from a batch's (index, target).

The original drew them in the data set (`CIFAR100InstanceSample`): for each sample, its
positive (itself in mode `exact`, a random sample of its class in mode `relax`) followed by
`nce_k` negatives drawn without replacement among the samples of the OTHER classes, with numpy
on the CPU, one sample at a time. Here the whole batch is drawn at once with torch's global RNG
(seeded by the loop, so a resumed run draws the same), on the device of the buffers, and only
the training targets are needed: any data path (DataLoader or device-resident) can use it.

Negatives: the other-class samples of the anchor's class c are the positions [0, M_c) of the
class-sorted index with the class's own block cut out (M_c = N - n_c). A uniform nce_k-subset
of [0, M_c) is drawn per row, exactly and independently:
- sparse path (nce_k well below M_c, CIFAR's 16384 of 49500): draw positions with replacement,
  enough that at least nce_k distinct ones appear (a row short of that, very rare, is drawn
  again), and keep the first nce_k distinct ones in order of appearance.
  The rule treats every position alike, so the kept set is a uniform nce_k-subset.
  Inside a CUDA graph (`cuda_graph True`) a short row cannot be drawn again: it keeps some of
  its first draws twice (a few repeated negatives, in a case about 8 standard deviations out).
  Cost O(B * nce_k) instead of O(B * N).
- dense path (nce_k close to M_c): random keys for every position and the nce_k smallest.
"""
import math

import torch
import torch.nn as nn

from common.errors import UserError


class ContrastSampler(nn.Module):
    """sampler(index, target) -> (B, 1 + nce_k) indices into the training set: column 0 is the
    positive, the rest are distinct samples of classes other than the anchor's."""

    def __init__(self, train_targets, nce_k, mode="exact"):
        super().__init__()
        if mode not in ("exact", "relax"):
            raise UserError(f"CRD mode must be exact or relax, got '{mode}'")
        targets = torch.as_tensor(train_targets, dtype=torch.long).flatten()
        counts = torch.bincount(targets)
        present = counts[counts > 0]
        available = len(targets) - int(present.max())
        if nce_k > available:
            raise UserError(f"nce_k {nce_k} is larger than the {available} negatives available "
                            f"(training set of {len(targets)} samples, largest class "
                            f"{int(present.max())}): set nce_k {available} or less")
        self.nce_k, self.mode, self.n_data = int(nce_k), mode, len(targets)
        self.widest = len(targets) - int(present.min())                  # most negatives of a class
        self.equal_sizes = bool((present == present[0]).all())           # CIFAR-100: 500 each
        # draws giving nce_k distinct positions on average, plus a margin of about 8 standard
        # deviations of the distinct count: a row short of nce_k (drawn again) is very rare
        needed = -available * math.log1p(-nce_k / available) if nce_k < available else math.inf
        self.draws = int(needed + 4 * math.sqrt(needed) + 16) if needed < math.inf else 0
        self.sparse = 0 < self.draws < available
        # dataset-derived tables: follow the module's device, not saved in state_dict
        self.register_buffer("order", torch.argsort(targets, stable=True), persistent=False)
        self.register_buffer("counts", counts, persistent=False)
        self.register_buffer("starts", counts.cumsum(0) - counts, persistent=False)

    def forward(self, index, target):
        n_c, start = self.counts[target], self.starts[target]
        if self.mode == "exact":
            positive = index
        else:
            offset = (torch.rand(len(target), device=n_c.device, dtype=torch.float64) * n_c).long()
            positive = self.order[start + torch.minimum(offset, n_c - 1)]
        sizes = self.n_data - n_c
        if self.sparse:
            # on the CPU, 8 rows at a time keep the (rows x M) table of `_sparse` in cache
            step = 8 if sizes.device.type == "cpu" else len(sizes)
            pos = torch.cat([self._sparse(sizes[i:i + step]) for i in range(0, len(sizes), step)])
        else:
            pos = self._dense(sizes)
        pos = torch.where(pos >= start[:, None], pos + n_c[:, None], pos)  # skip the class block
        return torch.cat([positive[:, None], self.order[pos]], dim=1)

    def _dense(self, sizes):
        keys = torch.rand(len(sizes), self.widest, device=sizes.device)
        keys.masked_fill_(torch.arange(self.widest, device=sizes.device) >= sizes[:, None], 2.0)
        return keys.topk(self.nce_k, dim=1, largest=False, sorted=False).indices

    def _sparse(self, sizes):
        """Per row, the first nce_k distinct of `draws` positions drawn with replacement."""
        rows, k, draws, device = len(sizes), self.nce_k, self.draws, sizes.device
        if self.equal_sizes:
            v = torch.randint(0, self.widest, (rows, draws), device=device)
        else:
            v = torch.randint(0, 2 ** 62, (rows, draws), device=device) % sizes[:, None]
        step = torch.arange(draws, dtype=torch.int32, device=device).expand(rows, draws)
        first = torch.full((rows, self.widest), draws, dtype=torch.int32, device=device)
        first.scatter_reduce_(1, v, step, "amin")                        # first step per value
        is_first = first.gather(1, v) == step
        rank = is_first.cumsum(1, dtype=torch.int32)                     # distinct so far
        out = v[:, :k + 1].clone()  # every column is overwritten unless the row is short
        column = torch.where(is_first & (rank <= k), rank - 1, k)        # column k: discarded
        out.scatter_(1, column.long(), v)
        out = out[:, :k]
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():  # no data-dependent branch
            return out
        short = rank[:, -1] < k
        if short.any():                                                  # rare: draw these again
            rows_short = short.nonzero().flatten()
            out[rows_short] = self._sparse(sizes[rows_short])
        return out
