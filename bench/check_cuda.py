"""Checks, on a CUDA machine, that the CUDA path computes what the CPU reference computes.
CI has no GPU: run this wherever one is available and record its output in BENCHMARKS.md.

    python bench/check_cuda.py

1. One step on CUDA (fast path, fp32 with TF32 off) against the same step on the CPU (plain
   path): loss and gradients within 1e-5, as tests/test_fast_path.py asks of the CPU paths.
2. The same with bf16 autocast on CUDA: within tests/test_fast_path.py's bf16 tolerance.
3. The whole step as a CUDA graph (`cuda_graph True`) against the same steps run eagerly, for
   every method that a graph can hold (GRAPHED_METHODS): 12 steps on the same batches with a learning-rate change after 6, fp32
   with TF32 off and deterministic cuDNN; the weights, the distiller's buffers (CRD's memory)
   and the losses must agree within 1e-5 (fused SGD rounds differently from foreach SGD).
Exit status 1 when any check fails; one line per check either way.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import tempfile  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from dataset.device_loader import build_fast_loaders  # noqa: E402
from dataset.synthetic import write_synthetic_cifar100  # noqa: E402
from distillers import build  # noqa: E402
from helper.config import load_config  # noqa: E402
from helper.trainer import Trainer  # noqa: E402
from models import model_dict  # noqa: E402
from test_fast_path import BF16_GRAD_COSINE, BF16_LOSS_RTOL  # noqa: E402

TOL = 1e-5
# every method whose step a CUDA graph holds (kdsvd and optimizer dot refuse cuda_graph; abound
# has no main-stage term; factor's and fsp's init stages run eagerly)
GRAPHED_METHODS = ("kd", "ASKD", "crd", "vid", "pkt", "nst", "dkd", "reviewkd", "ofd", "factor")
FAILED = []


def report(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def config(folder, method, **extra):
    cfg = dict(dataset="synthetic", data_dir=os.path.join(folder, "data"), synthetic_train_size=2000,
               synthetic_test_size=200, model_s="resnet8", model_t="resnet14", path_t="unused",
               distill=method, alpha=0.9 if method == "kd" else 0.0, beta=0.0 if method == "kd" else 1.0,
               **({"nce_k": 512} if method == "crd" else {}), epochs=2, lr_decay_epochs="1", batch_size=64, num_workers=0, tensorboard=False)
    cfg.update(extra)
    path = os.path.join(folder, f"{method}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return load_config(path, script="student")


def trainer_on(cfg, device, targets):
    torch.manual_seed(0)
    teacher, student = model_dict[cfg.model_t](num_classes=100), model_dict[cfg.model_s](num_classes=100)
    distiller = build(cfg, student.to(device), teacher.to(device), targets).to(device)
    return Trainer(cfg, distiller, None, None, None, None, device), distiller


def one_step(cfg, device, batch):
    """Loss and gradients of one step from the same weights (lr 0: nothing moves)."""
    image, target, index = (x.to(device) for x in batch)
    trainer, distiller = trainer_on(cfg, device, target.cpu())
    for group in trainer.optimizer.param_groups:
        group["lr"], group["weight_decay"], group["momentum"] = 0.0, 0.0, 0.0
    _, _, loss = trainer.step(trainer.optimizer, distiller, image, target, index)
    grads = torch.cat([p.grad.flatten() for p in distiller.parameters() if p.grad is not None])
    return loss.item(), grads.double().cpu()


def check_step_against_cpu(folder, loader, cuda):
    image, target, index = next(iter(loader))
    batch = (image[:16].cpu(), target[:16].cpu(), index[:16].cpu())
    for method in ("kd", "ASKD"):
        loss_cpu, grad_cpu = one_step(config(folder, method), torch.device("cpu"), batch)
        loss_gpu, grad_gpu = one_step(config(folder, method, fast=True), cuda, batch)
        err = (grad_gpu - grad_cpu).abs().max().item()
        rel = abs(loss_gpu - loss_cpu) / abs(loss_cpu)
        report(f"{method}: CUDA fp32 step vs CPU step", rel <= TOL and err <= TOL + TOL * grad_cpu.abs().max().item(),
               f"loss rel diff {rel:.2e}, gradient max abs diff {err:.2e} (of max {grad_cpu.abs().max():.2e})")
        loss_bf16, grad_bf16 = one_step(config(folder, method, fast=True, amp="bf16"), cuda, batch)
        cosine = torch.nn.functional.cosine_similarity(grad_bf16, grad_cpu, dim=0).item()
        rel = abs(loss_bf16 - loss_cpu) / abs(loss_cpu)
        report(f"{method}: CUDA bf16 step vs CPU fp32 step", rel <= BF16_LOSS_RTOL and cosine > BF16_GRAD_COSINE,
               f"loss rel diff {rel:.2e} (<= {BF16_LOSS_RTOL}), gradient cosine {cosine:.5f} (> {BF16_GRAD_COSINE})")


def run_steps(cfg, cuda, batches):
    trainer, distiller = trainer_on(cfg, cuda, torch.as_tensor(batches.dataset.targets))
    distiller.train()
    torch.manual_seed(1)
    losses = []
    for step, (image, target, index) in enumerate(batches):
        if step == 12:
            break
        trainer.set_lr(cfg.learning_rate * (0.1 if step >= 6 else 1.0))
        _, _, loss = trainer.train_step(image, target, index)
        losses.append(loss.detach().clone())
    torch.cuda.synchronize()
    state = {k: v.double().cpu() for k, v in distiller.state_dict().items() if v.is_floating_point()}
    return torch.stack(losses).double().cpu(), state


def check_graph_against_eager(folder, cuda):
    for method in GRAPHED_METHODS:
        results = []
        for graph in (False, True):
            cfg = config(folder, method, fast=True, cuda_graph=graph)
            loader, _ = build_fast_loaders(cfg, cuda)
            loader.sampler.set_epoch(1)
            results.append(run_steps(cfg, cuda, loader))
        (loss_e, state_e), (loss_g, state_g) = results
        loss_err = ((loss_g - loss_e).abs() / loss_e.abs()).max().item()
        worst = max(((state_g[k] - v).abs().max().item(), k) for k, v in state_e.items())
        report(f"{method}: CUDA graph vs eager, 12 steps", loss_err <= TOL and worst[0] <= TOL,
               f"loss rel diff {loss_err:.2e}, state max abs diff {worst[0]:.2e} ({worst[1]})")


def main():
    if not torch.cuda.is_available():
        sys.exit("check_cuda.py needs a CUDA device")
    cuda = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    print(f"{torch.cuda.get_device_name(cuda)}, torch {torch.__version__}: python bench/check_cuda.py "
          f"(TF32 off, deterministic cuDNN)", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_cifar100(os.path.join(folder, "data"), 2000, 200, seed=0)
        loader, _ = build_fast_loaders(config(folder, "kd", fast=True), cuda)
        loader.sampler.set_epoch(1)
        check_step_against_cpu(folder, loader, cuda)
        check_graph_against_eager(folder, cuda)
    print(f"{len(FAILED)} check(s) failed" if FAILED else "all checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
