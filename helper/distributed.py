"""torchrun DDP: the process group from the environment, and the few collectives the run needs.

`torchrun --standalone --nproc_per_node=N train_student.py -cfg X` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything here is a no-op for one process. NCCL on CUDA, gloo on
the CPU. `batch_size` stays the batch of the whole run: each of the N ranks takes
batch_size / N samples of the same seeded permutation, and DDP averages the gradients, so a
step sees the same global batch as one process would (linear-scaling rule: change
learning_rate only if you change batch_size).
"""
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.collectives import all_gather_cat, all_reduce_sum, barrier, world_size  # noqa: F401
from common.errors import UserError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def context():
    """The Context of this process as torchrun's environment says, without a process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context()
    return Context(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def init(device_name):
    """The Context of this process; starts the process group when torchrun launched it."""
    ctx = context()
    if not ctx.enabled:
        return ctx
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return ctx


def wrap(distiller, device):
    """The DDP wrapper the steps call. Buffers are not synced at each forward (the CRD memory
    is large and updated identically on every rank; BN statistics are made equal at the end
    of each epoch by `broadcast_state`)."""
    DDP = torch.nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else {"broadcast_buffers": False})
    own_modules = any(not name.startswith("student.") for name, _ in distiller.named_parameters())
    return DDP(distiller, device_ids=[device] if device.type == "cuda" else None,
               find_unused_parameters=own_modules and distiller.beta == 0, **no_sync)


def check_batch(batch_size, ctx):
    if batch_size % ctx.world_size:
        raise UserError(f"batch_size {batch_size} is not divisible by the {ctx.world_size} processes: "
                        f"each takes an equal share of the run's batch")








def average_gradients(parameters):
    """Average the gradients over the ranks (for modules trained outside the DDP wrapper)."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def broadcast_state(module):
    """Make every rank hold rank 0's buffers (BN statistics, CRD memory)."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)




def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()
