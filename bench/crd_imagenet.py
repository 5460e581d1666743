"""CRD at ImageNet's size: the memory its two banks take and what its per-step work costs beside
the networks' step, on this machine.

    python bench/crd_imagenet.py [--device cpu|cuda] [--batches 32,64,256] [--threads N] [--repeats R]

ImageNet's training set (1,281,167 images, 1000 classes of 732 to 1300 images) stands in as its
labels alone; the memories are 1,281,167 x feat_dim 128 (configs/imagenet/*/crd.yaml, nce_k
16384). Measured, per batch size B (the batch of one process: under DDP, batch_size / processes):
- the sampler: (B, 1 + 16384) contrast indices (distillers/crd_sampling.py), median ms of R calls;
- the memory's work: the two NCE losses from embeddings that need a gradient, their backward and
  the memory update (distillers/crd.py ContrastMemory), median ms;
- the networks' step for scale: ResNet34 teacher forward + ResNet18 student forward/backward at
  224 x 224 with SGD (the r34_r18 pair; skipped with --no-networks), median ms.
Prints one markdown table (paste it into BENCHMARKS.md).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distillers.crd import ContrastMemory  # noqa: E402
from distillers.crd_sampling import ContrastSampler  # noqa: E402
from models import model_dict  # noqa: E402

IMAGENET_TRAIN = 1_281_167
FEAT_DIM, NCE_K = 128, 16384


def imagenet_targets():
    """1000 classes summing to ImageNet's 1,281,167: one of 732 (its smallest), the rest of
    1300 (its largest) or one fewer."""
    counts = torch.full((1000,), 1300)
    counts[0] = 732
    deficit = int(counts.sum()) - IMAGENET_TRAIN
    counts[1:1 + deficit % 999] -= 1
    counts[1:] -= deficit // 999
    assert int(counts.sum()) == IMAGENET_TRAIN
    return torch.repeat_interleave(torch.arange(1000), counts)


def median_ms(fn, repeats, device):
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times[1:])


def mib(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors) / 2 ** 20


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="32,64,256")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-networks", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    targets = imagenet_targets()
    sampler = ContrastSampler(targets, NCE_K).to(device)
    memory = ContrastMemory(len(targets), FEAT_DIM).to(device)
    print(f"device {device}, {args.threads} threads; N {len(targets)}, feat_dim {FEAT_DIM}, nce_k {NCE_K}")
    print(f"memories: {mib(memory.memory_s, memory.memory_t):.0f} MiB (two banks, in every process and in "
          f"latest.pth); sampler tables {mib(sampler.order, sampler.counts, sampler.starts):.0f} MiB; "
          f"sparse path {sampler.sparse}, {sampler.draws} draws per row")
    print("\n| B (per process) | sampler ms | memory: losses + backward + update ms | "
          "r34 -> r18 step ms | CRD share of the step |\n|---|---|---|---|---|")
    for batch in map(int, args.batches.split(",")):
        index = torch.randint(0, len(targets), (batch,), device=device)
        target = targets.to(device)[index]
        sample_ms = median_ms(lambda: sampler(index, target), args.repeats, device)
        contrast = sampler(index, target)

        def memory_step():
            v_s = torch.nn.functional.normalize(torch.randn(batch, FEAT_DIM, device=device), dim=1).requires_grad_()
            v_t = torch.nn.functional.normalize(torch.randn(batch, FEAT_DIM, device=device), dim=1).requires_grad_()
            loss_s, loss_t = memory(v_s, v_t, contrast)
            memory.update(v_s.detach(), v_t.detach(), index)
            (loss_s + loss_t).backward()
        memory_ms = median_ms(memory_step, args.repeats, device)
        net_ms = float("nan") if args.no_networks else networks_ms(batch, args.repeats, device)
        share = (sample_ms + memory_ms) / (sample_ms + memory_ms + net_ms)
        print(f"| {batch} | {sample_ms:.0f} | {memory_ms:.0f} | {net_ms:.0f} | {100 * share:.0f}% |", flush=True)


def networks_ms(batch, repeats, device):
    teacher = model_dict["resnet34_imagenet"](num_classes=1000).to(device).eval()
    student = model_dict["resnet18_imagenet"](num_classes=1000).to(device).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    image = torch.randn(batch, 3, 224, 224, device=device)
    target = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.no_grad():
            teacher(image, is_feat=True)
        feats, logits = student(image, is_feat=True)
        torch.nn.functional.cross_entropy(logits, target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return median_ms(step, repeats, device)


if __name__ == "__main__":
    main()
