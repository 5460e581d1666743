"""The one train/validate loop, shared by teacher and student training. It names no method:
whatever the distiller returns is summed, logged term by term and back-propagated.

Epoch e (counted from 1) runs at learning_rate * lr_decay_rate^k, k = number of decay epochs
below e, or at timm's cosine schedule's rate; the rest of timm's recipe (Mixup, clipping, EMA)
comes through helper/recipe.py. Every RNG is re-seeded from (seed, e) at the start of each epoch,
and `latest.pth` is written at the end of each epoch, so a run interrupted anywhere resumes
bit-identically.

SIGUSR1 or SIGUSR2 (a cluster's preemption or time-limit warning: Slurm's, or what sweep.py's
Slurm jobs forward) stop the run at the next step boundary of a main-training epoch and save
that step in `latest.pth` (`partial`: the epoch, the steps done, the epoch's running sums and every
RNG state); a resume replays the epoch's batches up to it (data only), restores those states and
goes on from the next step, so the run still ends bit for bit as an uninterrupted one. One
process only: under DDP, and in an init stage, the run resumes from its last finished epoch.
"""
import functools
import math
import random
import signal
import time
import zlib

import numpy as np
import torch

from common.errors import UserError

from . import distributed
from .dot import DOT
from .logger import Progress
from .packing import write_peak_memory
from .recipe import Recipe, timm_optimizer


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# a mean test cross-entropy above this is divergence: logit gaps of 1e15 make every float32
# softmax one-hot, out of the range where a model learns (a uniform guess over 1000 classes scores
# 6.9; two steps of a tiny run, their batch statistics unsettled, have scored 1e11 in the tests)
DIVERGED_TEST_LOSS = 1e15


class NonFiniteLoss(UserError):
    """The run diverged: a training loss NaN or inf, an evaluation whose loss is non-finite or
    above DIVERGED_TEST_LOSS or whose logits are not all finite, or weights gone non-finite. The
    run stops with a non-zero exit, its log.txt says `diverged: ...` (report.py and sweep.py read
    it), and nothing after the last healthy epoch is saved."""


class Interrupted(UserError):
    """SIGINT/SIGTERM: the run stopped; latest.pth holds the last finished epoch."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but CUDA is not available here; use device cpu or auto")
    return torch.device(name)


def seed_everything(*parts):
    """Seed python, numpy and torch (all devices) from any tuple of ints and strings."""
    seed = zlib.crc32(repr(parts).encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state():
    """Every RNG the loop draws from: python, numpy, torch (CPU and every CUDA device), as
    tensors and plain values (what a weights-only checkpoint may hold)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def accuracy(logits, target, ks=(1, 5)):
    """Number of samples whose target is among the top-k logits, for each k (all of them when
    there are fewer than k classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top.eq(target[:, None])
    return [hit[:, :k].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model, loader, device):
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy of `model` over `loader`
    (sums kept on the device, read once at the end)."""
    model.eval()
    sums = torch.zeros(4, device=device)  # loss, top-1 hits, top-5 hits, samples with a non-finite logit
    count = 0
    for image, target, _ in loader:
        image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
        logits = model(image)
        loss = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")
        broken = (~torch.isfinite(logits)).any(dim=1).sum().float()
        sums += torch.stack([loss, *(hits.float() for hits in accuracy(logits, target)), broken])
        count += len(target)
    if count == 0:
        raise UserError("the test set is empty: check data_dir")
    loss, top1, top5, broken = sums.tolist()
    return {"top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "loss": loss / count,
            "nonfinite": int(broken)}


def diverged_score(score):
    """Why an evaluation (`evaluate`'s dict) shows divergence, or None."""
    if not math.isfinite(score["loss"]) or score["loss"] > DIVERGED_TEST_LOSS:
        return f"test loss {score['loss']:.4g}" + (" (above 1e15)" if math.isfinite(score["loss"]) else "")
    if score.get("nonfinite"):
        return f"{score['nonfinite']} test images with non-finite logits"
    return None


CHECKPOINT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # stop and save the step (preemption)


class StopOnSignal:
    """Turns SIGINT/SIGTERM (stop) and SIGUSR1/SIGUSR2 (save the step, then stop) into a flag the
    loop checks between steps."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        signals = (signal.SIGINT, signal.SIGTERM, *CHECKPOINT_SIGNALS)
        self.previous = {s: signal.signal(s, self.handle) for s in signals}
        return self

    def handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class GraphedStep:
    """A training step captured once as a CUDA graph and replayed (`cuda_graph True`).

    The first `warmup` calls run eagerly on a side stream (cudnn picks its kernels, SGD makes
    its momentum buffers, CRD fixes Z); the next call captures the step (capture records the
    kernels, it runs none) and every call from then on copies its batch into the graph's input
    buffers and replays the graph. The outputs are the graph's own tensors, overwritten by the
    next replay. The step must keep its shapes (the fast path drops the last partial batch),
    never read the GPU from the host, and take its learning rate from a device tensor
    (`Trainer.set_lr`)."""

    def __init__(self, step, warmup=3):
        self.step, self.warmup, self.eager_calls = step, warmup, 0
        self.graph = self.inputs = self.outputs = self.side = None

    def __call__(self, *inputs):
        if self.graph is None and self.eager_calls < self.warmup:
            self.eager_calls += 1
            side = self.side = self.side or torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        if self.graph is None:
            self.inputs = [x.clone() for x in inputs]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = self.step(*self.inputs)
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return self.outputs


class Trainer:
    """Runs the epochs of one run folder (`run`: see helper/run.py) for one distiller."""

    def __init__(self, cfg, distiller, train_loader, test_loader, run, logger, device,
                 ctx=distributed.Context(), val_loader=None, min_batch=1, num_classes=None, on_evaluated=None):
        self.cfg, self.distiller, self.run, self.logger, self.device = cfg, distiller, run, logger, device
        # a final batch smaller than this is dropped: the method's losses or the models' BatchNorms
        # (helper/session.py `min_batch`) are not defined on it
        self.min_batch = max(distiller.min_batch, min_batch)
        self.train_loader, self.test_loader, self.ctx = train_loader, test_loader, ctx
        self.val_loader = val_loader  # the held-out images (val_split): the best checkpoint is chosen on them
        self.on_evaluated = on_evaluated  # (epoch, val top-1) after each evaluated epoch: tune.py's pruning
        self.model = distiller  # what the steps call: the DDP wrapper when there are several ranks
        if ctx.enabled:
            self.model = distributed.wrap(distiller, device)
        # under cuda_graph the learning rate lives in a device tensor read by fused SGD, so the
        # captured step follows the schedule
        self.lr = torch.tensor(cfg.learning_rate, device=device) if cfg.cuda_graph else None
        # the main training's parameters: those that need a gradient (a method freezes the
        # modules it trains only in its init stage, AB's connectors, FT's paraphraser)
        trained = [p for p in distiller.parameters() if p.requires_grad]
        self.optimizer = self.make_optimizer(trained, graphed=cfg.cuda_graph, main=True)
        self.recipe = Recipe(cfg, distiller, len(train_loader) if train_loader is not None else 1, num_classes)
        self.train_step = functools.partial(self.step, self.optimizer, self.model)
        if cfg.cuda_graph:
            self.train_step = GraphedStep(self.train_step)
        self.best_acc, self.start_epoch, self.init_done = 0.0, 1, 0
        self.best_epoch, self.test_at_best = 0, None  # with a validation split: where it was best, the test there
        self.last_test = None
        self.stop, self.partial = None, None
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    def make_optimizer(self, params, graphed=False, main=False, lr=None):
        """SGD with the config's momentum and weight decay; DOT or timm's AdamW for the main
        training when the config says. `lr`: the init stage's own rate (None: the config's)."""
        cfg = self.cfg
        if main and cfg.optimizer == "dot":
            return DOT(params, cfg.learning_rate, cfg.momentum, cfg.dot_delta, cfg.weight_decay)
        if main and cfg.optimizer == "adamw":
            return timm_optimizer(cfg, self.distiller)
        lr = self.lr if graphed else (lr or cfg.learning_rate)
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               fused=True if graphed else None)

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            if self.lr is None:
                group["lr"] = lr
            else:  # (a resumed optimizer state brings its own lr tensor: put ours back)
                self.lr.fill_(lr)
                group["lr"] = self.lr

    # -- resume -------------------------------------------------------------------------------
    def state(self, epoch, finished=False, init_optimizer=None, partial=None):
        return {
            "epoch": epoch,
            "partial": partial,
            "init_done": self.init_done,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "test_at_best": self.test_at_best,
            "distiller": self.distiller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "init_optimizer": init_optimizer.state_dict() if init_optimizer else None,
            "config": self.run.config_dict,
            "finished": finished,
            "recipe": self.recipe.state(),
        }

    def restore(self, state):
        self.distiller.load_state_dict(state["distiller"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # fused or not is this run's choice
            if "fused" in self.optimizer.defaults:
                group["fused"] = self.optimizer.defaults["fused"]
        self.best_acc = state["best_acc"]
        self.best_epoch, self.test_at_best = state.get("best_epoch", 0), state.get("test_at_best")
        self.start_epoch = state["epoch"] + 1
        self.init_done = state["init_done"]
        self.partial = state.get("partial")  # an epoch stopped at a step (preemption)
        self.recipe.load_state(state.get("recipe"))
        return state.get("init_optimizer")

    # -- steps --------------------------------------------------------------------------------
    def check_stop(self, where, partial=None):
        """Stop if a signal came; `partial()`: the state of the step just done, saved first when the
        signal asks for it (a checkpoint signal, one process, a main-training epoch)."""
        if self.stop is None or self.stop.signum is None:
            return
        name = signal.Signals(self.stop.signum).name
        if partial is not None and self.stop.signum in CHECKPOINT_SIGNALS and not self.ctx.enabled:
            state = partial()
            self.run.save_latest(state)
            raise Interrupted(f"{name} received during {where}: stopped; latest.pth in {self.run.path} holds "
                              f"this step ({state['partial']['steps']} of epoch {state['partial']['epoch']}); "
                              f"run the same command again to go on from it", self.stop.signum)
        raise Interrupted(f"{name} received during {where}: stopped; latest.pth in {self.run.path} "
                          f"holds the last finished epoch; run the same command again to resume",
                          self.stop.signum)

    def step(self, optimizer, compute_losses, image, target, index, *view, average=()):
        """One optimisation step; returns (logits or None, {name: loss tensor}, total loss).
        `view`: the batch's view numbers, when the loader gives them (the teacher cache).
        `average`: parameters whose gradients are averaged over the ranks by hand (those
        trained outside the DDP wrapper)."""
        if self.cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=AMP_DTYPES.get(self.cfg.amp), enabled=self.cfg.amp != "off",
                            cache_enabled=not self.cfg.cuda_graph):
            logits, losses = compute_losses(image, target, index, *view)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if isinstance(optimizer, DOT):
            self.dot_backward(optimizer, losses)
        else:
            self.scaler.scale(loss).backward()
            distributed.average_gradients(average)
            if optimizer is self.optimizer and self.cfg.clip_grad:
                self.scaler.unscale_(optimizer)
                self.recipe.clip(optimizer)
            self.scaler.step(optimizer)
            self.scaler.update()
        # detached: a caller holding them must not keep this step's autograd graph alive
        return (None if logits is None else logits.detach(),
                {name: value.detach() for name, value in losses.items()}, loss.detach())

    @staticmethod
    def dot_backward(optimizer, losses):
        """DOT's two backward passes: the distillation terms' gradients first, kept by the
        optimizer, then the task term's (cross-entropy), then the step."""
        distill = [value for name, value in losses.items() if name != "ce" and value.requires_grad]
        if distill:
            sum(distill).backward(retain_graph=True)
            optimizer.take_distill_grads()
            optimizer.zero_grad(set_to_none=True)
        losses["ce"].backward()
        optimizer.step()

    def read_totals(self, sums, correct, seen):
        """The sums over every rank, as python numbers: ({name: sum}, correct, seen)."""
        values = torch.stack([*sums.values(), correct.float(), torch.tensor(float(seen), device=self.device)])
        values = distributed.all_reduce_sum(values).tolist()
        return dict(zip(sums, values[:-2])), values[-2], values[-1]

    def train_epoch(self, desc, step_fn, lr, first=False, epoch=None):
        """`step_fn(image, target, index[, view])` -> (logits, losses, loss) for each batch. Sums stay
        on the device; they are read (and checked for NaN/inf) every step on the plain path and
        every print_freq steps on the fast path, where a read costs a sync. `first`: the run's
        first epoch (a loss that breaks there points at the config). `epoch`: the main training's
        epoch, whose steps a checkpoint signal saves (and a resume of such a step continues)."""
        sums, correct, seen = {}, torch.zeros((), device=self.device), 0
        progress = Progress(len(self.train_loader), desc, self.cfg.print_freq, enabled=self.ctx.is_main)
        read_every = self.cfg.print_freq if self.cfg.fast else 1
        done = 0  # steps of this epoch already taken before a preemption
        if epoch is not None and self.partial and self.partial["epoch"] == epoch:
            done, saved, self.partial = self.partial["steps"], self.partial, None
            sums = {k: v.to(self.device) for k, v in saved["sums"].items()}
            correct, seen = saved["correct"].to(self.device), saved["seen"]
        totals, total_correct, total_seen = {}, 0.0, 0
        partial = None
        try:
            for step, (image, target, index, *view) in enumerate(self.train_loader, 1):
                if step < done:  # the batches the stopped run took: drawn again (data only), skipped
                    continue
                if step == done:  # where it stopped: its RNG states, then on as it would have gone
                    set_rng_state(saved["rng"])
                    progress.update(done - (step % read_every == 0 or step == len(self.train_loader)))
                # a final batch too small for the method, the models or Mixup is dropped (the same
                # on every rank: the ranks' shares have equal sizes)
                elif len(target) >= self.min_batch and self.recipe.trains(len(target)):
                    image = image.to(self.device, non_blocking=True)
                    target = target.to(self.device, non_blocking=True)
                    index = index.to(self.device, non_blocking=True)
                    view = [v.to(self.device, non_blocking=True) for v in view]
                    taught = target
                    if epoch is not None:  # the main training: the recipe's rate and mixing
                        if self.recipe.per_step:
                            self.set_lr(self.recipe.lr(epoch, step))
                        image, taught = self.recipe.mix(image, target)
                    logits, losses, loss = step_fn(image, taught, index, *view)
                    if epoch is not None:
                        self.recipe.update_ema(self.distiller, epoch, step)
                    n = len(target)
                    seen += n
                    for name, value in losses.items():
                        sums[name] = sums.get(name, 0.0) + value.detach().float() * n
                    if logits is not None:
                        correct += accuracy(logits.detach(), target, ks=(1,))[0]
                if step % read_every == 0 or step == len(self.train_loader):
                    totals, total_correct, total_seen = self.read_totals(sums, correct, seen)
                    total = sum(totals.values())
                    if not math.isfinite(total):
                        self.non_finite(desc, step, totals, losses, lr, first and step <= max(10, read_every))
                    if total_seen:
                        progress.update(read_every if step % read_every == 0 else step % read_every,
                                        loss=total / total_seen, acc=100.0 * total_correct / total_seen)
                if epoch is not None:
                    partial = functools.partial(self.partial_state, epoch, step, sums, correct, seen)
                self.check_stop(f"{desc} step {step}", partial)
        except (RuntimeError, OSError):
            self.check_stop(desc)  # a signal also kills loader workers: report the signal
            raise
        finally:
            progress.close()
        if seen == 0:
            raise UserError("the training set yielded no batch: check data_dir and batch_size")
        means = {f"train_{k}": v / total_seen for k, v in totals.items()}
        means["train_loss"] = total / total_seen
        means["train_acc"] = 100.0 * total_correct / total_seen
        # samples of a final batch too small for the method (on the fast path: any partial one);
        # under DDP every rank's share of the epoch is len(sampler), padding included
        dropped = len(self.train_loader.sampler) * self.ctx.world_size - int(total_seen)
        if dropped > 0:
            means["dropped"] = dropped
        return means

    def partial_state(self, epoch, steps, sums, correct, seen):
        """latest.pth for a main-training epoch stopped after `steps` steps: the last finished
        epoch's fields, this step's weights and optimizer, and what the epoch needs to go on."""
        partial = {"epoch": epoch, "steps": steps, "sums": {k: v.detach().cpu() for k, v in sums.items()},
                   "correct": correct.detach().cpu(), "seen": seen, "rng": rng_state()}
        return self.state(epoch - 1, partial=partial)

    def non_finite(self, desc, step, totals, losses, lr, early):
        """Stop with a NonFiniteLoss naming the term(s) that broke and the likely cause."""
        broken = [name for name, value in totals.items() if not math.isfinite(value)]
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        if early:
            advice = ("it broke in the run's first steps, so the config is the likely cause, not the "
                      "learning rate: check the method's knobs (see its docstring) and the batch size")
        else:
            advice = "lower learning_rate or check the data"
        self.diverged(
            f"loss term {', '.join(broken)} became non-finite by {desc} step {step} (last step: {terms}; "
            f"lr {lr:g}): stopped; the checkpoints of the last good epoch in {self.run.path} are kept; "
            f"{advice}")

    def diverged(self, message):
        """Mark the run folder's log (`diverged: ...`) and stop with a NonFiniteLoss."""
        if self.logger is not None:
            self.logger.write_lines([f"diverged: {message}"])
        raise NonFiniteLoss(message)

    def check_health(self, epoch, test):
        """After epoch `epoch`'s training (and its evaluation `test`, rank 0's, or None): stop every
        rank together when the evaluation diverged or the weights are no longer finite."""
        why = diverged_score(test) if test is not None else None
        if why is None and not torch.stack([torch.isfinite(p).all() for p in self.distiller.parameters()]).all():
            why = "non-finite weights"  # (one read of the device for all of them)
        if distributed.all_reduce_sum(torch.tensor(float(why is not None), device=self.device)).item():
            where = f"the evaluation after epoch {epoch}" if test is not None else f"epoch {epoch}"
            self.diverged(f"{where} diverged ({why or 'on rank 0'}): stopped; the best checkpoint and latest.pth "
                          f"of epoch {epoch - 1} in {self.run.path} are kept; lower learning_rate or check the "
                          f"method's weights and knobs")

    def set_epoch(self, phase, epoch):
        """Seed every RNG and the data order from (seed, phase, epoch)."""
        seed_everything(self.cfg.seed, phase, epoch)
        self.train_loader.sampler.set_epoch(epoch if phase == "train" else -epoch)

    def init_stage(self, init_state):
        """A method's stage before training (FSP): only its modules, its own SGD, no schedule."""
        stage = self.distiller.init_stage()
        if stage is None or self.init_done >= self.cfg.init_epochs:
            return
        params = list(stage.modules.parameters())
        frozen = [p for p in params if not p.requires_grad]
        for p in frozen:  # trained in this stage only (AB's connectors, FT's paraphraser)
            p.requires_grad_(True)
        optimizer = self.make_optimizer(params, lr=stage.lr)
        if init_state is not None:
            optimizer.load_state_dict(init_state)
        lr = optimizer.param_groups[0]["lr"]
        step = functools.partial(self.step, optimizer, lambda *batch: (None, stage.losses(*batch)),
                                 average=params)
        try:
            for epoch in range(self.init_done + 1, self.cfg.init_epochs + 1):
                self.set_epoch("init", epoch)
                self.distiller.eval()  # as the original: only the stage's modules in train mode
                stage.modules.train()
                start = time.time()
                stats = self.train_epoch(f"init {epoch}/{self.cfg.init_epochs}", step, lr, first=epoch == 1)
                self.init_done = epoch
                self.run.save_latest(self.state(0, init_optimizer=optimizer))
                self.logger.message(f"init epoch {epoch} lr {lr:g} loss {stats['train_loss']:.6g} "
                                    f"seconds {time.time() - start:.1f}")
        finally:
            for p in frozen:
                p.requires_grad_(False)

    def fit(self, resume_state=None):
        init_state = self.restore(resume_state) if resume_state else None
        with StopOnSignal() as self.stop:
            self.init_stage(init_state)
            for epoch in range(self.start_epoch, self.cfg.epochs + 1):
                self.one_epoch(epoch)
        self.run.save_last(self.distiller.deployed, self.cfg.epochs, self.best_acc)
        if self.recipe.ema is not None:
            self.run.save_last(self.recipe.ema.module, self.cfg.epochs, self.recipe.ema_best, kind="ema_")
        self.run.save_latest(self.state(self.cfg.epochs, finished=True))
        if self.val_loader is None:
            self.logger.message(f"done: best top-1 {self.best_acc:.2f} in {self.run.path}")
        elif self.ctx.is_main:
            self.logger.message(f"done: best val top-1 {self.best_acc:.2f} at epoch {self.best_epoch}, test top-1 there "
                                f"{self.test_at_best:.2f}; last epoch test top-1 {self.last_test:.2f} in {self.run.path}")
        distributed.barrier()
        return self.best_acc

    def evaluate_ema(self, epoch):
        """Score the EMA weights as the model is scored (test, and val when held out), keep their
        best checkpoint (chosen on val when held out, else on test); their log fields."""
        ema = self.recipe.ema.module
        test = evaluate(ema, self.test_loader, self.device)
        fields = {"ema_test_acc": test["top1"]}
        chosen = test["top1"]
        if self.val_loader is not None:
            chosen = fields["ema_val_acc"] = evaluate(ema, self.val_loader, self.device)["top1"]
        improved = chosen > self.recipe.ema_best or not self.recipe.ema_best_epoch
        if improved:
            self.recipe.ema_best, self.recipe.ema_best_epoch = chosen, epoch
            self.run.save_best(ema, epoch, self.recipe.ema_best, kind="ema_")
        fields["ema_best_acc"] = self.recipe.ema_best
        return fields

    def one_epoch(self, epoch):
        lr = self.recipe.lr(epoch)
        self.set_lr(lr)
        self.set_epoch("train", epoch)
        self.distiller.train()
        self.distiller.start_epoch(epoch)
        start = time.time()
        stats = self.train_epoch(f"epoch {epoch}/{self.cfg.epochs}", self.train_step, lr,
                                 first=epoch == 1 and not self.init_done, epoch=epoch)
        train_seconds = time.time() - start
        distributed.broadcast_state(self.distiller)  # ranks end every epoch identical
        test = val = None
        if self.ctx.is_main and (epoch % self.cfg.eval_freq == 0 or epoch == self.cfg.epochs):
            test = evaluate(self.distiller.deployed, self.test_loader, self.device)  # the best only among these
            if self.val_loader is not None:
                val = evaluate(self.distiller.deployed, self.val_loader, self.device)
        self.check_health(epoch, test)
        if not self.ctx.is_main:
            return  # rank 0 alone evaluates, logs and saves
        top1, tested = None, {}
        if test is not None:
            top1 = test["top1"]
            tested = {"test_loss": test["loss"], "test_acc": top1, "test_acc_top5": test["top5"]}
            self.last_test = top1
        chosen = top1 if val is None else val["top1"]  # what the best checkpoint is chosen on
        if val is not None:
            tested.update({"val_loss": val["loss"], "val_acc": chosen})
        # the first evaluated epoch is the best so far even at 0% (a best checkpoint always exists)
        improved = chosen is not None and (chosen > self.best_acc or not self.best_epoch)
        if improved:
            self.best_epoch, self.test_at_best = epoch, top1
        self.best_acc = max(self.best_acc, chosen or 0.0)
        if val is not None:
            tested["test_at_best_val"] = self.test_at_best
        self.run.save_epoch(self.distiller.deployed, epoch, chosen, self.best_acc, improved)
        if self.recipe.ema is not None and test is not None:
            tested.update(self.evaluate_ema(epoch))
        self.run.save_latest(self.state(epoch))
        if self.device.type == "cuda":  # what sweep.py --runs-per-gpu sizes its packing by
            write_peak_memory(self.run.path, self.device)
        self.logger.epoch(epoch, {"lr": lr, **stats, **tested, ("best_val_acc" if val is not None else "best_acc"):
                                  self.best_acc, "seconds": round(train_seconds, 2)})
        if self.on_evaluated is not None and val is not None:  # the validation score alone, never the test's
            self.on_evaluated(epoch, val["top1"])
