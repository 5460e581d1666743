"""DOT: Zhao et al., "DOT: A Distillation-Oriented Trainer" (ICCV 2023), as mdistiller's
`engine/dot.py` updates the weights.

SGD that keeps two momentum buffers per parameter: one for the gradient of the task loss
(cross-entropy), one for the gradient of the distillation loss, with momenta
mu_task = momentum - dot_delta and mu_kd = momentum + dot_delta (mu_mix = their mean, used for a
parameter that receives only one of the two gradients). A step is two backward passes:

    loss_kd.backward(retain_graph=True); opt.take_distill_grads()
    opt.zero_grad(); loss_task.backward(); opt.step()

`step` then applies, with lr, weight decay wd and a first step that seeds a buffer with its
gradient (no momentum yet, as torch's SGD):
  1. task: for every p with a task gradient g:  d = g + wd p;
       b_task <- mu_task b_task + d  if p also has a distillation gradient, else  mu_mix b_task + d;
       p <- p - lr b_task
  2. distillation: for every p with a distillation gradient k (read before 1.):
       with a task gradient:     b_kd <- mu_kd b_kd + k           (its weight decay went into 1.)
       without one:              b_kd <- mu_mix b_kd + (k + wd p)  (p as updated by 1.)
       a first step:             b_kd <- k                         (no weight decay: the original's)
       p <- p - lr b_kd
One parameter group; both buffers live in `state`, so a resumed run continues exactly.
"""
import torch


class DOT(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum, delta, weight_decay=0.0):
        if not (0 <= momentum - delta and momentum + delta < 1):
            raise ValueError(f"DOT needs 0 <= momentum - delta and momentum + delta < 1, "
                             f"got momentum {momentum}, delta {delta}")
        super().__init__(params, dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay))
        if len(self.param_groups) != 1:
            raise ValueError("DOT takes one parameter group")
        self.distill_grads = {}

    @torch.no_grad()
    def take_distill_grads(self):
        """Keep the gradients now in `.grad` as the distillation gradients of the next `step`."""
        self.distill_grads = {p: p.grad.clone() for p in self.param_groups[0]["params"]
                              if p.grad is not None}

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        lr, wd = group["lr"], group["weight_decay"]
        mu_task, mu_kd = group["momentum"] - group["delta"], group["momentum"] + group["delta"]
        mu_mix = (mu_task + mu_kd) / 2
        distill = self.distill_grads
        for p in group["params"]:
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=wd) if wd else p.grad
            state = self.state[p]
            if "task_buffer" not in state:
                state["task_buffer"] = d.clone()
            else:
                state["task_buffer"].mul_(mu_task if p in distill else mu_mix).add_(d)
            p.add_(state["task_buffer"], alpha=-lr)
        for p, k in distill.items():
            state = self.state[p]
            if "distill_buffer" not in state:
                state["distill_buffer"] = k
            elif p.grad is not None:
                state["distill_buffer"].mul_(mu_kd).add_(k)
            else:
                state["distill_buffer"].mul_(mu_mix).add_(k.add(p, alpha=wd) if wd else k)
            p.add_(state["distill_buffer"], alpha=-lr)
        self.distill_grads = {}
