"""torchrun DDP: the process group from the environment, and the few collectives the run needs.

`torchrun --standalone --nproc_per_node=N train_student.py -cfg X` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything here is a no-op for one process. NCCL on CUDA, gloo on
the CPU. `batch_size` stays the batch of the whole run: each of the N ranks takes
batch_size / N samples of the same seeded permutation, and DDP averages the gradients, so a
step sees the same global batch as one process would (linear-scaling rule: change
learning_rate only if you change batch_size).

Restarts (`torchrun --max-restarts N`): since torch 2.5 torchrun's agent hosts one TCPStore that
every round of workers shares (TORCHELASTIC_USE_AGENT_STORE), and the process group's
rendezvous keys (gloo's peer addresses, NCCL's unique id) are written there without a round
prefix. A restarted round then read the dead round's keys: a rank connected to a dead peer's
port (gloo: "connectFullMesh failed ... Connection refused") or waited on a peer that never
answered, past every timeout. Here each round of one agent (one node) forms its group under its
own prefix (`attempt_<TORCHELASTIC_RESTART_COUNT>`). The restart count is the agent's own, not
shared between nodes (pytorch#135712), so several nodes that may restart must launch torchrun
with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (a fresh store each round): refused otherwise. A group
that has not formed after `ddp_init_timeout` seconds ends the process (exit 1), so torchrun's next
restart proceeds instead of a job waiting out its allocation.
"""
import datetime
import inspect
import os
import sys
import threading
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


COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer fails


def init(device_name, init_timeout=300):
    """The Context of this process; starts the process group when torchrun launched it, or
    ends the process when the group has not formed within `init_timeout` seconds."""
    ctx = context()
    if not ctx.enabled:
        return ctx
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        with deadline(init_timeout, ctx):
            store = round_store(init_timeout)
            dist.init_process_group("nccl" if use_cuda else "gloo", store=store, rank=ctx.rank,
                                    world_size=ctx.world_size, timeout=COLLECTIVE_TIMEOUT)
    return ctx


def round_store(timeout):
    """The store this round of workers forms its group in: under torchrun's shared agent store, a
    client of it under this round's own prefix; otherwise None (torch's env:// rendezvous)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    if nodes > 1 and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        raise UserError(f"torchrun with restarts on {nodes} nodes: launch it with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                        f"on every node (its shared store keeps a failed round's keys, which the next round "
                        f"would read: docs/clusters.md)")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=datetime.timedelta(seconds=timeout))
    return dist.PrefixStore(f"askd/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


class deadline:
    """Ends the process (exit 1, one line on stderr) if the block has not finished after `seconds`:
    a process group that cannot form may wait in C++ past its own timeouts."""

    def __init__(self, seconds, ctx):
        self.seconds, self.ctx = seconds, ctx
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def expire(self):
        print(f"error: rank {self.ctx.rank} of {self.ctx.world_size}: the process group did not form within "
              f"ddp_init_timeout {self.seconds:g} s: exiting so that torchrun can restart the group", file=sys.stderr,
              flush=True)
        os._exit(1)

    def __enter__(self):
        self.timer.start()

    def __exit__(self, *exc):
        self.timer.cancel()


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
