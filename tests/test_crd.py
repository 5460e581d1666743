"""CRD: the contrast memory and NCE loss against the original's figures (reference/crd.json),
the contrast-index sampling (classes, duplicates, positives, uniformity, reproducibility) and
the distiller's state (memories and Z saved, resume exact)."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from distillers.crd import CRD, ContrastMemory
from distillers.crd_sampling import ContrastSampler
from helper.config import get_cfg_defaults
from common.errors import UserError
from models import model_dict

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "crd.json")))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_contrast_memory_matches_reference():
    n, dim, b = REF["N"], REF["feat_dim"], REF["batch"]
    stdv = 1 / (dim / 3) ** 0.5
    memory = ContrastMemory(n, dim, REF["nce_t"], REF["nce_m"]).double()
    memory.memory_s.copy_((2 * torch.rand(n, dim, generator=gen(1), dtype=torch.float64) - 1) * stdv)
    memory.memory_t.copy_((2 * torch.rand(n, dim, generator=gen(2), dtype=torch.float64) - 1) * stdv)
    index = torch.tensor(REF["idx"])
    contrast = torch.tensor(REF["contrast_idx"])
    assert torch.equal(contrast[:, 0], index)
    assert torch.equal(contrast[:, 1:], torch.randint(0, n, (b, REF["nce_k"]), generator=gen(5)))
    close = dict(rel=1e-6, abs=0)
    for step in REF["steps"]:
        v_s = F.normalize(torch.randn(b, dim, generator=gen(step["v1_seed"]), dtype=torch.float64))
        v_t = F.normalize(torch.randn(b, dim, generator=gen(step["v2_seed"]), dtype=torch.float64))
        out_s, out_t = memory.scores(v_s, v_t, contrast)
        loss_s, loss_t = memory(v_s, v_t, contrast)
        memory.update(v_s, v_t, index)
        assert memory.z[0].item() == pytest.approx(step["Z_v1"], **close)
        assert memory.z[1].item() == pytest.approx(step["Z_v2"], **close)
        assert out_s.sum().item() == pytest.approx(step["out_v1_sum"], **close)
        assert out_t.sum().item() == pytest.approx(step["out_v2_sum"], **close)
        assert loss_s.item() == pytest.approx(step["loss_student_side"], **close)
        assert loss_t.item() == pytest.approx(step["loss_teacher_side"], **close)
        assert memory.memory_s.sum().item() == pytest.approx(step["memory_v1_sum_after"], **close)
        assert memory.memory_t.sum().item() == pytest.approx(step["memory_v2_sum_after"], **close)
        assert memory.memory_s[0, :4].tolist() == pytest.approx(step["memory_v1_row0_after"], **close)


def uneven_targets():
    """300 samples of 4 classes of sizes 60, 70, 80 and 90, shuffled."""
    targets = torch.repeat_interleave(torch.arange(4), torch.tensor([60, 70, 80, 90]))
    return targets[torch.randperm(len(targets), generator=gen(0))]


@pytest.mark.parametrize("nce_k,sparse", [(40, True), (200, False), (210, False)])
@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_sampler_classes_duplicates_positive(nce_k, sparse, mode):
    targets = uneven_targets()
    sampler = ContrastSampler(targets, nce_k, mode)
    assert sampler.sparse == sparse
    torch.manual_seed(0)
    index = torch.randperm(len(targets))[:64]
    target = targets[index]
    for _ in range(3):
        idx = sampler(index, target)
        assert idx.shape == (64, 1 + nce_k) and idx.dtype == torch.long
        negatives = idx[:, 1:]
        assert (targets[negatives] != target[:, None]).all()
        assert negatives.min() >= 0 and negatives.max() < len(targets)
        assert (negatives.sort(1).values.diff(dim=1) > 0).all()          # no duplicate in a row
        if mode == "exact":
            assert torch.equal(idx[:, 0], index)
        else:
            assert torch.equal(targets[idx[:, 0]], target)
    if mode == "relax":                                                 # not always the anchor
        assert (idx[:, 0] != index).any()


def even_targets():
    """280 samples of 4 classes of 70, shuffled (like CIFAR-100's 500 per class)."""
    return torch.arange(280)[torch.randperm(280, generator=gen(0))] % 4


@pytest.mark.parametrize("make,nce_k,draws", [(uneven_targets, 40, None), (uneven_targets, 200, None),
                                              (even_targets, 40, None), (even_targets, 40, 45)])
def test_sampler_is_uniform(make, nce_k, draws):
    """Every negative of a class is drawn equally often (a biased rule, such as keeping the
    smallest distinct draws, fails this by far); consecutive rows are independent. draws 45:
    most rows fall short of 40 distinct draws and are drawn again."""
    targets = make()
    sampler = ContrastSampler(targets, nce_k)
    assert sampler.equal_sizes == (make is even_targets)
    if draws:
        sampler.draws = draws
    torch.manual_seed(1)
    rows = 3000
    anchor = (targets == 3).nonzero()[0]
    negatives = int((targets != 3).sum())
    idx = sampler(anchor.expand(rows), targets[anchor].expand(rows))[:, 1:]
    assert (targets[idx] != 3).all()
    assert (idx.sort(1).values.diff(dim=1) > 0).all()
    counts = torch.bincount(idx.flatten(), minlength=len(targets)).double()[targets != 3]
    p = nce_k / negatives
    expected, sd = rows * p, (rows * p * (1 - p)) ** 0.5
    assert counts.sum() == rows * nce_k
    assert (counts - expected).abs().max() < 5 * sd
    a, b = idx[:-1:2], idx[1::2]                    # overlap of independent rows: nce_k * p
    overlap = (a[:, :, None] == b[:, None, :]).sum((1, 2)).double()
    assert overlap.mean().item() == pytest.approx(nce_k * p, rel=0.05)


def test_sampler_reproducible_from_global_seed():
    targets = uneven_targets()
    sampler = ContrastSampler(targets, 40, "relax")
    index = torch.arange(16)
    torch.manual_seed(5)
    first = sampler(index, targets[index])
    torch.manual_seed(5)
    assert torch.equal(sampler(index, targets[index]), first)
    assert not torch.equal(sampler(index, targets[index]), first)


def test_sampler_errors():
    targets = uneven_targets()
    with pytest.raises(UserError, match="nce_k 211 is larger than the 210 negatives"):
        ContrastSampler(targets, 211)                                   # class 3: 300 - 90
    ContrastSampler(targets, 210)
    with pytest.raises(UserError, match="mode"):
        ContrastSampler(targets, 10, "loose")


def crd_cfg(**overrides):
    cfg = get_cfg_defaults("crd")
    cfg.merge_from_list(["alpha", 0.9, "beta", 0.8, "nce_k", 40, "feat_dim", 16]
                        + [x for kv in overrides.items() for x in kv])
    return cfg


def test_crd_state_dict_and_exact_resume():
    torch.manual_seed(0)
    targets = uneven_targets()
    teacher = model_dict["resnet8"](num_classes=100).eval()

    def make():
        torch.manual_seed(1)
        return CRD(model_dict["resnet8"](num_classes=100), teacher, crd_cfg(), targets)

    a, b = make(), make()
    keys = set(a.state_dict())
    assert {"memory.memory_s", "memory.memory_t", "memory.z"} <= keys
    assert not any(k.startswith("sampler.") for k in keys)            # dataset tables: not saved
    assert a.memory.memory_s.shape == (300, 16) and a.memory.z.tolist() == [-1, -1]
    bound = 1 / (16 / 3) ** 0.5
    assert a.memory.memory_s.abs().max() <= bound and a.memory.memory_t.abs().max() <= bound
    image = torch.randn(4, 3, 32, 32)
    index = torch.tensor([0, 10, 20, 30])
    target = targets[index]

    torch.manual_seed(2)
    a(image, target, index)                                           # sets Z, moves memory
    assert (a.memory.z > 0).all()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(3)
    _, losses_a = a(image, target, index)
    torch.manual_seed(3)
    _, losses_b = b(image, target, index)
    assert losses_a["crd"].item() == losses_b["crd"].item()
    assert torch.equal(a.memory.memory_s, b.memory.memory_s)
    # the memory rows of the batch (and only those) moved to unit vectors
    moved = (a.memory.memory_t != make().memory.memory_t).any(1)
    assert moved.nonzero().flatten().tolist() == index.tolist()
    assert torch.allclose(a.memory.memory_t[index].norm(dim=1), torch.ones(4))


def test_crd_needs_enough_negatives():
    targets = uneven_targets()
    net = model_dict["resnet8"](num_classes=100)
    with pytest.raises(UserError, match="nce_k"):
        CRD(net, model_dict["resnet8"](num_classes=100), crd_cfg(nce_k=16384), targets)
