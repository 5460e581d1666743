"""The method battery: what every method, built-in or a user's, must survive, checked on small
synthetic data. `check_method.py` prints it; the test suite runs it on every registered method.

    checks = run_battery("dkd")                       # [Check(name, status, reason), ...]
    checks = run_battery("my_pkg.method:MyKD", pairs=[("resnet14", "resnet8")])

Each check passes, fails, or does not apply ("n/a", e.g. CUDA graphs without a GPU); a method
refusing a path in one line (its `UserError`) passes that check. The checks, in order:
- builds: on every pair, or refuses the pair in one line;
- knobs: every value a declared knob's rule forbids is refused in one line by the config;
- losses: a training forward gives named, finite, scalar losses ("ce" among them);
- gradients: every trainable parameter the distiller owns gets a gradient, the teacher's none
  (the init stage's modules in their stage);
- lowers: 20 steps on one batch (learning rate 0.02) lower the sum of the method's terms, in
  its init stage and in the main training (cross-entropy and KD off; KD on for a method
  without a term of its own);
- teacher: after those steps the teacher is in eval mode (train mode where the method declares
  `teacher_train_mode`) and unchanged (its BN statistics may move in train mode);
- checkpoint: the distiller's state saved and loaded as latest.pth rebuilds an equal distiller;
- resume: through the training script, a run stopped after epoch 1 and resumed ends bit for bit
  as the run done at once (student, and every state of the distiller);
- fast: the fast path trains one epoch, or is refused in one line;
- teacher_cache: where the method declares it reads only the teacher's logits (and embedding),
  an epoch served by the teacher cache ends as the epoch that runs the teacher (float
  tolerance); otherwise the cache is refused in one line;
- ddp: 2 gloo ranks each give every owned parameter a gradient and end with equal parameters;
- cuda_graph: on CUDA the graphed run ends as the eager one; refused in one line where the method
  declares it cannot be captured;
- min_batch: a batch of `min_batch` samples gives finite losses, the loop never hands the method
  a smaller one, and a smaller batch_size is refused in one line.

The runs use the method's knobs at their defaults, gamma = alpha = beta = 1, then the method's
`check_settings` (what it needs on 128 images, e.g. CRD's nce_k, or its paper's weight where
beta 1 does not suit it), then `settings`.
"""
import contextlib
import dataclasses
import functools
import io
import os
import shutil
import socket
import sys
import tempfile
import time

import torch
import yaml

from common.errors import UserError

STATUSES = ("pass", "fail", "n/a")
DEFAULT_PAIRS = (("resnet14", "resnet8"), ("wrn_16_2", "ShuffleV1"))  # (teacher, student)
TRAIN_SIZE, TEST_SIZE, BATCH = 128, 64, 32


@dataclasses.dataclass
class Check:
    name: str
    status: str
    reason: str


def one_line(error):
    text = str(error)
    return text if "\n" not in text.strip() else None


@torch.no_grad()
def calibrated(model, size=32):
    """`model` with the BN statistics of two random batches, as training would leave them (a
    fresh deep model's raw eval-mode features grow without bound; no released teacher looks
    like that)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a cumulative average over the calibration batches
    for _ in range(2):
        model(torch.randn(16, 3, size, size))
    return model


class Workspace:
    """A temporary folder with the synthetic data, a teacher file per pair and run folders."""

    def __init__(self, root, pairs, cache=None):
        from dataset.synthetic import write_synthetic_cifar100
        self.root = root
        self.cache = cache or os.path.join(root, "teacher_cache")
        self.data = os.path.join(root, "data")
        write_synthetic_cifar100(self.data, TRAIN_SIZE, TEST_SIZE, seed=0)
        self.teachers = {teacher: self.teacher_file(teacher) for teacher, _ in pairs}
        self.runs = 0

    def teacher_file(self, name):
        """A random teacher, `calibrated`, saved in CRD's checkpoint format."""
        from helper.trainer import seed_everything
        from models import build_model
        seed_everything(0, "battery teacher", name)
        model = calibrated(build_model(name, 100, 32, key="model_t"))
        path = os.path.join(self.root, f"{name}_teacher.pth")
        torch.save({"model": model.state_dict()}, path)
        return path

    def config(self, name, pair, settings, **extra):
        """The path of a YAML config of method `name` on `pair`, and its run folder."""
        teacher, student = pair
        self.runs += 1
        folder = os.path.join(self.root, f"run{self.runs}")
        cfg = dict(dataset="synthetic", data_dir=self.data, synthetic_train_size=TRAIN_SIZE,
                   synthetic_test_size=TEST_SIZE, model_s=student, model_t=teacher, path_t=self.teachers[teacher],
                   distill=name, gamma=1.0, alpha=1.0, beta=1.0, epochs=2, lr_decay_epochs="1",
                   learning_rate=0.01, batch_size=BATCH, num_workers=0, init_epochs=1, print_freq=100,
                   save_folder=folder, device="cpu", tensorboard=False)
        cfg.update(settings)
        cfg.update(extra)
        path = os.path.join(self.root, f"run{self.runs}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return path, folder


def quiet(fn, *args, **kwargs):
    """fn(...) with its stdout and stderr swallowed (the runs' progress lines)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def build_distiller(cfg_path, overrides=()):
    """(cfg, distiller, batch) of a config: the models as the training script builds them, and a
    fixed training batch of 16 synthetic images (`make_batch`)."""
    import dataset
    from distillers import build
    from helper.checkpoint import load_teacher
    from helper.config import load_config
    from helper.trainer import seed_everything
    from models import build_model
    cfg = load_config(cfg_path, overrides, "student")
    teacher = load_teacher(cfg.model_t, cfg.path_t, 100, image_size=32, kwargs=cfg.model_t_kwargs)
    seed_everything(cfg.seed, "weights", cfg.model_s)
    student = build_model(cfg.model_s, 100, 32, cfg.model_s_kwargs)
    images, targets = dataset.read_split(dataset.data_root(cfg), "train")
    targets = torch.as_tensor(targets)
    distiller = build(cfg, student, teacher, targets)
    index = torch.arange(16)
    return cfg, distiller, make_batch(distiller, targets[index], index, seed=1)


def make_batch(distiller, target, index, seed):
    """(image, target, index) of random images: as the loader makes them, the views of a method
    that takes two (`strong_view`) one after the other."""
    views = 2 if distiller.strong_view else 1
    image = torch.randn(views * len(index), 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return image, target, index


def take(batch, n):
    """The first n samples of a batch, every view of them."""
    image, target, index = batch
    return torch.cat([v[:n] for v in image.split(len(target))]), target[:n], index[:n]


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _full_warm_up(distiller, cfg):
    distiller.start_epoch(max(cfg.epochs, 10 ** 6))  # every warm-up at its full weight


class Battery:
    """The checks of one method (see the module's docstring)."""

    def __init__(self, name, pairs, settings, ws):
        from distillers import method_class
        self.name, self.pairs, self.ws = name, [tuple(p) for p in pairs], ws
        self.cls = method_class(name)[0]
        self.settings = {**getattr(self.cls, "check_settings", {}), **dict(settings)}
        self.cfg_path = None  # the first pair's config, once it builds

    # -- helpers ---------------------------------------------------------------------------
    def config(self, pair=None, **extra):
        return self.ws.config(self.name, pair or self.pairs[0], self.settings, **extra)

    def fresh(self):
        return build_distiller(self.cfg_path)

    def trainer(self, cfg, distiller):
        from helper.trainer import Trainer
        return Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))

    # -- the checks ------------------------------------------------------------------------
    def builds(self):
        notes = []
        for pair in self.pairs:
            path, _ = self.config(pair)
            try:
                build_distiller(path)
            except UserError as e:
                if one_line(e) is None:
                    return "fail", f"{pair[0]} -> {pair[1]}: refused in more than one line"
                notes.append(f"{pair[0]} -> {pair[1]} refused: {e}")
                continue
            self.cfg_path = self.cfg_path or path
            notes.append(f"{pair[0]} -> {pair[1]} builds")
        if self.cfg_path is None:
            return "fail", "refuses every pair, so nothing else can be checked: pass --pairs it takes"
        return "pass", "; ".join(notes)

    def knobs(self):
        from common.knobs import declared_knobs
        from helper.config import load_config
        knobs = [k for k in declared_knobs(self.cls).values() if k.rule is not None]
        if not knobs:
            return "pass", "no knob with a rule declared"
        wrong = []
        for knob in knobs:
            for value in knob.rule.violations:
                try:
                    load_config(self.cfg_path, [knob.name, str(value)], "student")
                    wrong.append(f"{knob.name} {value!r} accepted")
                except UserError as e:
                    if knob.name not in str(e) or one_line(e) is None:
                        wrong.append(f"{knob.name} {value!r}: the refusal does not name it in one line")
        if wrong:
            return "fail", "; ".join(wrong)
        return "pass", f"{', '.join(k.name for k in knobs)}: forbidden values refused"

    def losses(self):
        cfg, distiller, batch = self.fresh()
        distiller.train()
        _full_warm_up(distiller, cfg)
        logits, losses = distiller(*batch)
        if not isinstance(losses, dict) or not losses or not all(isinstance(k, str) for k in losses):
            return "fail", f"forward must return (logits, {{name: loss}}), got {type(losses).__name__}"
        bad = [k for k, v in losses.items() if not (torch.is_tensor(v) and v.dim() == 0 and torch.isfinite(v))]
        if bad:
            return "fail", f"not a finite scalar: {', '.join(bad)}"
        if "ce" not in losses:
            return "fail", "no 'ce' term: the student's cross-entropy is the base class's"
        return "pass", ", ".join(f"{k} {v.item():.4g}" for k, v in losses.items())

    def gradients(self):
        cfg, distiller, batch = self.fresh()
        teacher = distiller.teacher
        missing, notes = [], []
        stage = distiller.init_stage()
        if stage is not None:  # as the loop trains it: its frozen modules take gradients in the stage
            params = dict(stage.modules.named_parameters())
            frozen = [p for p in params.values() if not p.requires_grad]
            for p in frozen:
                p.requires_grad_(True)
            distiller.eval()
            stage.modules.train()
            sum(stage.losses(*batch).values()).backward()
            missing += [f"(init stage) {n}" for n, p in params.items() if p.grad is None]
            for p in params.values():
                p.grad = None
            for p in frozen:
                p.requires_grad_(False)
            notes.append("init stage")
        distiller.train()
        _full_warm_up(distiller, cfg)
        _, losses = distiller(*batch)
        sum(losses.values()).backward()
        owned = [(n, p) for n, p in distiller.named_parameters() if p.requires_grad]
        missing += [n for n, p in owned if p.grad is None]
        if any(p.requires_grad or p.grad is not None for p in teacher.parameters()):
            return "fail", "the teacher's parameters take gradients"
        if missing:
            return "fail", f"owned parameters that get no gradient: {', '.join(missing[:6])}" + \
                ("..." if len(missing) > 6 else "")
        return "pass", f"all {len(owned)} owned parameters" + (f" ({', '.join(notes)} too)" if notes else "")

    def lowers_and_teacher(self, steps=20, alpha=0):
        """Both checks from one short run on the method's own terms (cross-entropy and KD off; KD
        on for a method with no term of its own): {'lowers': ..., 'teacher': ...}."""
        cfg, distiller, batch = build_distiller(self.cfg_path, ["gamma", "0", "alpha", str(alpha),
                                                                "learning_rate", "0.02"])
        teacher = distiller.teacher
        before = _snapshot(teacher)
        trainer = self.trainer(cfg, distiller)
        moves, stuck, any_term = [], [], False
        stage = distiller.init_stage()
        runs = []
        frozen = []
        if stage is not None:
            frozen = [p for p in stage.modules.parameters() if not p.requires_grad]
            for p in frozen:
                p.requires_grad_(True)
            optimizer = trainer.make_optimizer(list(stage.modules.parameters()), lr=stage.lr)
            runs.append(("init stage", functools.partial(trainer.step, optimizer, lambda *b: (None, stage.losses(*b))),
                         stage.modules))
        runs.append(("", functools.partial(trainer.step, trainer.optimizer, distiller), None))
        for label, step, stage_modules in runs:
            if stage_modules is not None:
                distiller.eval()
                stage_modules.train()
            else:
                distiller.train()
                _full_warm_up(distiller, cfg)
            first = {k: v.item() for k, v in step(*batch)[1].items()}
            for _ in range(steps):
                last = {k: v.item() for k, v in step(*batch)[1].items()}
            terms = [t for t in first if t != "ce"]
            any_term = any_term or bool(terms)
            moves += [f"{term}{f' ({label})' if label else ''} {first[term]:.4g} -> {last[term]:.4g}" for term in terms]
            if terms and sum(last[t] for t in terms) >= sum(first[t] for t in terms):
                stuck.append(label or "main training")
            if stage_modules is not None:
                for p in frozen:
                    p.requires_grad_(False)
        if not any_term and not alpha:
            return self.lowers_and_teacher(steps, alpha=1)
        if not any_term:
            lowers = ("fail", "the method returns no term besides 'ce'")
        elif stuck:
            lowers = ("fail", f"the sum of the terms did not fall in {steps} steps ({', '.join(stuck)}): "
                              f"{'; '.join(moves)}")
        else:
            lowers = ("pass", "; ".join(moves))
        distiller.train()
        mode = self.cls.teacher_train_mode
        after = teacher.state_dict()
        changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
        buffers = {n for n, _ in teacher.named_buffers()}
        if teacher.training != mode:
            teacher_check = ("fail", f"the teacher is in {'train' if teacher.training else 'eval'} mode while "
                                     f"the distiller trains (teacher_train_mode {mode})")
        elif [k for k in changed if k not in buffers or not mode]:
            teacher_check = ("fail", f"the teacher changed: {', '.join(changed[:4])}")
        else:
            teacher_check = ("pass", "train mode (declared), weights unchanged" if mode else "eval mode, unchanged")
        return {"lowers": lowers, "teacher": teacher_check}

    def checkpoint(self):
        from helper.checkpoint import load_checkpoint, save_atomic
        cfg, distiller, batch = self.fresh()
        trainer = self.trainer(cfg, distiller)
        distiller.train()
        trainer.step(trainer.optimizer, distiller, *batch)  # a state that is not the initial one
        path = os.path.join(self.ws.root, "latest_check.pth")
        save_atomic({"distiller": distiller.state_dict()}, path)
        _, again, _ = self.fresh()
        again.load_state_dict(load_checkpoint(path)["distiller"])
        a, b = distiller.state_dict(), again.state_dict()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        if differ:
            return "fail", f"not restored: {', '.join(differ[:4])}"
        teacher = {t.data_ptr() for t in distiller.teacher.state_dict().values()}
        if teacher & {t.data_ptr() for t in a.values()}:
            return "fail", "the distiller's state holds the teacher's tensors (keep the teacher out of its module tree)"
        return "pass", f"{len(a)} entries restored; none of them the teacher's"

    def run(self, folder_path, epochs):
        from helper.session import distil
        return quiet(distil, folder_path, ["epochs", str(epochs)])

    def resume(self):
        from helper.checkpoint import load_checkpoint
        whole_cfg, whole = self.config()
        split_cfg, split = self.config()
        self.run(whole_cfg, 2)
        self.run(split_cfg, 1)
        self.run(split_cfg, 2)
        differ = []
        for name in ("latest.pth",):
            a = load_checkpoint(os.path.join(whole, name))["distiller"]
            b = load_checkpoint(os.path.join(split, name))["distiller"]
            differ += [k for k in a if not torch.equal(a[k], b[k])]
        if differ:
            return "fail", f"resumed run differs in {', '.join(differ[:4])}"
        return "pass", "2 epochs at once == 1 + 1 resumed, bit for bit"

    def fast(self):
        path, folder = self.config(fast=True, epochs=1)
        try:
            self.run(path, 1)
        except UserError as e:
            return ("pass", f"refused: {e}") if one_line(e) else ("fail", "refused in more than one line")
        return "pass", "one epoch on the fast path"

    def teacher_cache(self):
        from helper.checkpoint import load_checkpoint
        finals = []
        for cache in (self.ws.cache, "off"):
            path, folder = self.config(fast=True, teacher_cache=cache)
            try:
                self.run(path, 1)
            except UserError as e:
                return ("pass", f"refused: {e}") if one_line(e) else ("fail", "refused in more than one line")
            finals.append(load_checkpoint(os.path.join(folder, "latest.pth"))["distiller"])
        differ = [k for k in finals[0] if not torch.allclose(finals[0][k].double(), finals[1][k].double(),
                                                             rtol=1e-5, atol=1e-6)]
        if differ:
            return "fail", (f"declares teacher_reads {self.cls.teacher_reads}, yet the cached run differs from the "
                            f"uncached one in {', '.join(differ[:4])}")
        return "pass", f"reads {', '.join(self.cls.teacher_reads)}: the cached run == the uncached run"

    def cuda_graph(self):
        if not self.cls.capturable:
            path, _ = self.config(fast=True, cuda_graph=True)
            try:
                self.run(path, 1)
            except UserError as e:
                return ("pass", f"refused: {e}") if one_line(e) else ("fail", "refused in more than one line")
            return "fail", "declared not capturable, yet cuda_graph was not refused"
        if not torch.cuda.is_available():
            return "n/a", "no CUDA device here (run check_method.py on a GPU machine)"
        from helper.checkpoint import load_checkpoint
        finals = []
        for graph in (False, True):
            path, folder = self.config(fast=True, device="cuda", cuda_graph=graph)
            self.run(path, 2)
            finals.append(load_checkpoint(os.path.join(folder, "latest.pth"))["distiller"])
        differ = [k for k in finals[0] if not torch.equal(finals[0][k], finals[1][k])]
        if differ:
            return "fail", f"the graphed run differs from the eager one in {', '.join(differ[:4])}"
        return "pass", "graphed run == eager run, bit for bit"

    def min_batch(self):
        from helper.session import check_method
        from models.contract import smallest_trainable_batch
        need = self.cls.min_batch
        cfg, distiller, batch = self.fresh()
        models = max(smallest_trainable_batch(distiller.student, 32), 1)  # a student's own (BatchNorm on 1x1)
        distiller.train()
        _full_warm_up(distiller, cfg)
        with torch.no_grad():
            _, losses = distiller(*take(batch, max(need, models)))
        bad = [k for k, v in losses.items() if not torch.isfinite(v)]
        if bad:
            return "fail", (f"declares min_batch {need}, but a batch of {max(need, models)} gives a non-finite "
                            f"{', '.join(bad)}: declare min_batch = {need + 1}")
        if need == 1:
            student = f" (the student's BatchNorms take {models}: the loop drops a smaller batch)" if models > 1 else ""
            return "pass", f"min_batch 1: a batch of {max(need, models)} gives finite losses{student}"
        seen = []
        forward = distiller.forward
        distiller.forward = lambda image, target, *rest: (seen.append(len(target)), forward(image, target, *rest))[1]
        loader = _Batches([take(batch, BATCH // 4), take(batch, need - 1)])
        from helper.trainer import Trainer
        trainer = Trainer(cfg, distiller, loader, None, None, None, torch.device("cpu"))
        quiet(trainer.train_epoch, "epoch 1/1", trainer.train_step, cfg.learning_rate)
        if min(seen) < need:
            return "fail", f"the loop handed it a batch of {min(seen)}"
        try:
            check_method(cfg, 1)  # the config's own batch_size: no refusal here
            small = cfg.clone()
            small.defrost()
            small.batch_size = need - 1
            check_method(small, 1)
        except UserError as e:
            return "pass", f"min_batch {need}: a batch of {need - 1} is dropped; batch_size {need - 1} refused: {e}"
        return "fail", f"batch_size {need - 1} (below min_batch {need}) is not refused"

    def ddp(self):
        return check_ddp([self.name], self.cfg_path)[self.name]


class _Batches(list):
    """Fixed batches as a loader, with what the loop reads of one."""

    @property
    def sampler(self):
        return range(sum(len(b[1]) for b in self))

    @property
    def dataset(self):
        return self.sampler


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, jobs, out):
    """One of 2 gloo ranks: for each (method, config), 3 steps on this rank's own batches."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from helper import distributed
    from helper.trainer import Trainer
    ctx = distributed.init("cpu")  # never shut down: see the end
    report = {}
    for name, cfg_path in jobs:
        try:
            cfg, distiller, batch = build_distiller(cfg_path)
            batches = _Batches([make_batch(distiller, batch[1][:8], torch.arange(8) + 8 * i + 24 * rank,
                                           seed=10 * rank + i) for i in range(3)])
            trainer = Trainer(cfg, distiller, batches, None, None, None, torch.device("cpu"), ctx)
            seen = set()
            for n, p in distiller.named_parameters():
                if p.requires_grad:
                    p.register_hook(functools.partial(lambda n, grad: seen.add(n), n))
            quiet(trainer.train_epoch, "epoch 1/1", trainer.train_step, cfg.learning_rate)
            owned = [n for n, p in distiller.named_parameters() if p.requires_grad]
            flat = torch.cat([p.detach().flatten() for p in distiller.parameters()])
            gathered = [torch.empty_like(flat) for _ in range(2)]
            dist.all_gather(gathered, flat)
            report[name] = {"without_grad": [n for n in owned if n not in seen],
                            "equal": torch.equal(*gathered), "error": None}
        except UserError as e:
            report[name] = {"error": str(e)}
    torch.save(report, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    # Out at once, past every destructor: tearing gloo down while the other rank is still
    # connected to rank 0's store aborted a rank now and then on a loaded machine ("terminate
    # called without an active exception"). The report is written; nothing else is left.
    sys.stdout.flush()
    os._exit(0)


DDP_CHECK_SECONDS = 120  # per method: its 3 steps on 2 ranks take seconds; a hang fails the check


def check_ddp(jobs_or_names, cfg_path=None):
    """{method: Check} of 2 gloo ranks (one spawn for every job): `jobs_or_names` is a list of
    (method, config path), or of names sharing `cfg_path`."""
    import torch.multiprocessing as mp
    jobs = [j if isinstance(j, tuple) else (j, cfg_path) for j in jobs_or_names]
    out = tempfile.mkdtemp(prefix="battery_ddp_")
    try:
        ranks = mp.start_processes(_ddp_worker, args=(_free_port(), jobs, out), nprocs=2, start_method="spawn",
                                   join=False)
        deadline = time.time() + DDP_CHECK_SECONDS * len(jobs)
        while not ranks.join(timeout=1):
            if time.time() > deadline:
                for process in ranks.processes:
                    process.kill()
                late = f"2 gloo ranks still running after {DDP_CHECK_SECONDS * len(jobs)} s: killed"
                return {name: Check("ddp", "fail", late) for name, _ in jobs}
        reports = [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    checks = {}
    for name, _ in jobs:
        ranks = [report[name] for report in reports]
        if ranks[0]["error"]:
            error = ranks[0]["error"]
            checks[name] = Check("ddp", "pass" if one_line(error) else "fail", f"refused: {error}")
        elif any(r["without_grad"] for r in ranks):
            missing = sorted({n for r in ranks for n in r["without_grad"]})
            checks[name] = Check("ddp", "fail", f"no gradient under DDP: {', '.join(missing[:6])}")
        elif not ranks[0]["equal"]:
            checks[name] = Check("ddp", "fail", "the ranks' parameters differ after a step: not reduced")
        else:
            checks[name] = Check("ddp", "pass", "2 gloo ranks: every owned parameter reduced, ranks equal")
    return checks


ORDER = ("builds", "knobs", "losses", "gradients", "lowers", "teacher", "checkpoint", "resume", "fast",
         "teacher_cache", "ddp", "cuda_graph", "min_batch")


def method_pairs(name):
    """The (teacher, student) pairs the battery runs method `name` on by default: the method's own
    `check_pairs` (DeiT's distilled ViT student), else DEFAULT_PAIRS."""
    from distillers import method_class
    return tuple(method_class(name)[0].check_pairs) or DEFAULT_PAIRS


def parse_pair(text):
    """'resnet14:resnet8' or 'resnet14:timm:deit_tiny_distilled_patch16_224' -> (teacher, student):
    a library's prefix (timm:, torchvision:) stays with its name."""
    from models.library import LIBRARIES
    parts, names = text.split(":"), []
    while parts:
        part = parts.pop(0)
        names.append(f"{part}:{parts.pop(0)}" if part in LIBRARIES and parts else part)
    if len(names) != 2:
        raise UserError(f"--pairs takes TEACHER:STUDENT (a library model as timm:NAME), got {text}")
    return tuple(names)


def run_battery(name, pairs=None, settings=(), ddp=True, workdir=None, cache_dir=None):
    """[Check] of method `name` (a built-in name or a plugin), in ORDER, on `pairs` (None: the
    method's `method_pairs`). `ddp` False leaves the DDP check to the caller (the test suite runs
    every method's in one spawn: `check_ddp`). `cache_dir`: the teacher caches' folder, which
    batteries may share (the workspace's teachers and data are the same every time, so is their
    cache); None: one in the workspace."""
    pairs = pairs or method_pairs(name)
    root = workdir or tempfile.mkdtemp(prefix="battery_")
    try:
        battery = Battery(name, pairs, settings, Workspace(root, pairs, cache_dir))
        results = {}
        status, reason = _guard(battery.builds)
        results["builds"] = Check("builds", status, reason)
        if status != "pass":
            return [results.get(n, Check(n, "fail", "not run: the method does not build")) for n in ORDER]
        for check in ORDER[1:]:
            if check == "teacher" or (check == "ddp" and not ddp):
                continue
            if check == "lowers":
                outcome = _guard(battery.lowers_and_teacher, both=True)
                for key in ("lowers", "teacher"):
                    results[key] = Check(key, *outcome[key])
                continue
            if check == "ddp":
                results["ddp"] = _guard(battery.ddp, whole=True)
                continue
            results[check] = Check(check, *_guard(getattr(battery, check)))
        return [results[n] for n in ORDER if n in results]
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def _guard(check, both=False, whole=False):
    """A check's result; an exception it raises is its failure, said in one line."""
    try:
        return check()
    except Exception as e:  # the battery reports, it does not crash on the method's bugs
        text = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {text[-1] if text else ''}"[:300]
        if whole:
            return Check("ddp", "fail", reason)
        if both:
            return {"lowers": ("fail", reason), "teacher": ("fail", "not run: " + reason)}
        return "fail", reason


def exit_status(checks):
    return 0 if all(c.status != "fail" for c in checks) else 1


def table(name, checks):
    width = max(len(c.name) for c in checks)
    lines = [f"method {name}"]
    lines += [f"  {c.name:<{width}}  {c.status:<4}  {c.reason}" for c in checks]
    failed = sum(c.status == "fail" for c in checks)
    lines.append(f"{failed} of {len(checks)} checks failed" if failed else
                 f"none of {len(checks)} checks failed (n/a: not applicable here)")
    return "\n".join(lines)


