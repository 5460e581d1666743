"""The DDP collectives that a method or a data set may need; in one process each is a no-op
(or returns its input), so the code reads the same with and without torchrun."""
import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_sum(tensor):
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor):
    """Every rank's `tensor` concatenated along dim 0, in rank order (itself without DDP)."""
    if not dist.is_initialized():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def barrier():
    if dist.is_initialized():
        dist.barrier()
