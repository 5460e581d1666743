"""Formula-made weights and inputs, so a model can be checked against the reference figures
(tests/reference/zoo/) without shipping any weights.

`fill_deterministic(model)` overwrites every state-dict entry. A floating-point entry gets values
from its own CPU generator seeded with `zlib.crc32(key)`, drawn in float64 and cast to the
entry's dtype, so they depend only on the key's name and shape:
  - `...running_mean`: 0.1 * N(0, 1)
  - `...running_var`: 1 + 0.1 * U(0, 1)
  - 2+ dimensions (conv / linear weights): N(0, 1) / sqrt(fan_in), fan_in = numel of one row
  - other 1-d `...weight` (a norm layer's scale): 1 + 0.1 * N(0, 1)
  - any other entry (biases): 0.1 * N(0, 1)
Integer entries (`num_batches_tracked`) are zeroed. The reference figures were made on a model
converted with `.double()` first.

`fixed_input(batch)`: N(0, 1) of shape (batch, 3, 32, 32) in float64, from generator seed 0.
"""
import math
import zlib

import torch


def _draw(key, shape):
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    normal = lambda: torch.randn(shape, generator=gen, dtype=torch.float64)  # noqa: E731
    if key.endswith("running_mean"):
        return 0.1 * normal()
    if key.endswith("running_var"):
        return 1 + 0.1 * torch.rand(shape, generator=gen, dtype=torch.float64)
    if len(shape) >= 2:
        return normal() / math.sqrt(math.prod(shape[1:]))
    if key.endswith("weight"):
        return 1 + 0.1 * normal()
    return 0.1 * normal()


@torch.no_grad()
def fill_deterministic(model):
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            tensor.copy_(_draw(key, tensor.shape))
        else:
            tensor.zero_()
    return model


def fixed_input(batch=4):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, 32, 32, generator=gen, dtype=torch.float64)
