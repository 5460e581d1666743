"""Everything a training script sets up before the loop: config, device, data, run folder."""
import os

import torch

import dataset
from common.errors import UserError
from models import build_model
from models.contract import smallest_trainable_batch
from models.pretrained import is_pretrained_name
from models.resize import ResizedInput

from . import distributed, teacher_cache
from .checkpoint import load_teacher
from .config import load_config
from .logger import NullLogger, RunLogger
from .run import RunFolder
from .teachers import check_teacher_accuracy, load_registry
from .threads import set_threads
from .trainer import Trainer, evaluate, pick_device, seed_everything


def check_recipe(cfg, world_size):
    """What timm's recipe keys ask of the method and the processes: Mixup's soft labels a method
    that reads labels cannot take, an even share of each batch for Mixup to pair, a second view
    that timm's transforms do not make."""
    from distillers import method_class
    method = method_class(cfg.distill)[0]
    if cfg.mixup or cfg.cutmix:
        if method.reads_labels(cfg):
            raise UserError(f"method '{cfg.distill}' reads the batch's labels, which Mixup and CutMix make soft "
                            f"(docs/recipes.md): set mixup 0 and cutmix 0, or choose another method")
        if (cfg.batch_size // world_size) % 2:
            raise UserError(f"Mixup and CutMix pair the images of each process's batch, but batch_size "
                            f"{cfg.batch_size} gives {cfg.batch_size // world_size} to each of {world_size} "
                            f"processes: set a batch_size that gives an even share")
    if cfg.transform == "timm" and method.strong_view:
        raise UserError(f"method '{cfg.distill}' makes its own strong view after the data set's crop and flip, "
                        f"which transform timm replaces: set transform crd")


def check_method(cfg, world_size):
    """What the method asks of the run: a batch (per rank) of at least `min_batch` samples, a
    step that a CUDA graph can hold when cuda_graph is on, and teacher outputs that the teacher
    cache can serve when it is on."""
    from distillers import method_class
    method = method_class(cfg.distill)[0]
    teacher_cache.check(cfg, method)
    if cfg.cuda_graph and not method.capturable:
        raise UserError(f"method '{cfg.distill}' reads the GPU from the host during its step, which "
                        f"a CUDA graph cannot hold: set cuda_graph false")
    if cfg.fast and method.strong_view:
        raise UserError(f"method '{cfg.distill}' trains on a second, strongly augmented view of each image "
                        f"(PIL RandAugment), which the fast path does not make: set fast false")
    need, per_rank = method.min_batch, cfg.batch_size // world_size
    if per_rank < need:
        where = f" per process ({world_size} processes)" if world_size > 1 else ""
        raise UserError(f"method '{cfg.distill}' compares the samples of a batch and needs at least "
                        f"{need} of them{where}, but batch_size {cfg.batch_size} gives {per_rank}: "
                        f"set batch_size {need * world_size} or more")


def missing_teacher(cfg):
    """What to do when path_t is neither a file nor a library's pretrained weights; None when it is one."""
    if os.path.exists(cfg.path_t) or is_pretrained_name(cfg.path_t):
        return None
    fetch = f"python fetch_teachers.py {cfg.model_t} downloads it, or " if cfg.model_t in load_registry() else ""
    return (f"teacher checkpoint {cfg.path_t} not found: {fetch}set path_t (a file, or "
            f"torchvision:WEIGHTS / timm:TAG for a library model's pretrained weights)")


class Session:
    def __init__(self, cfg_path, overrides, script, check=False):
        """`check` (--check): stop once the config has passed every refusal that reads no file, before
        the run folder, the data and the teacher, without a process group (helper/check.py goes on)."""
        self.cfg = cfg = load_config(cfg_path, overrides, script)
        self.ctx = ctx = distributed.context() if check else distributed.init(cfg.device, cfg.ddp_init_timeout)
        distributed.check_batch(cfg.batch_size, ctx)
        check_recipe(cfg, ctx.world_size)
        if script == "student":
            check_method(cfg, ctx.world_size)
        self.device = pick_device(cfg.device)
        if ctx.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", ctx.local_rank)
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        if cfg.cuda_graph and (self.device.type != "cuda" or ctx.enabled):
            raise UserError(f"cuda_graph needs one process on a CUDA device; this run has "
                            f"{ctx.world_size} process(es) on {self.device.type}: set cuda_graph false")
        if cfg.optimizer == "dot" and ctx.enabled:  # DDP's reducer takes one backward per forward
            raise UserError(f"optimizer dot takes two backward passes a step, which DDP does not "
                            f"support; this run has {ctx.world_size} processes: run one process or "
                            f"set optimizer sgd")
        if check:
            return
        threads = set_threads(self.device, cfg.num_threads, 0 if cfg.fast else cfg.num_workers)
        self.run = RunFolder(cfg, script, write=ctx.is_main)
        self.spec = dataset.data_spec(cfg)
        missing = missing_teacher(cfg) if script == "student" else None
        if missing:
            raise UserError(missing)
        if ctx.is_main:
            dataset.prepare_data(cfg)
        distributed.barrier()
        if cfg.fast:
            from dataset.device_loader import build_fast_loaders
            self.train_loader, self.test_loader, self.val_loader = build_fast_loaders(
                cfg, self.device, ctx.rank, ctx.world_size, views=self.uses_cache(cfg, script), val=True)
        else:
            train, held = dataset.training_parts(cfg)
            self.train_loader = dataset.build_train_loader(cfg, ctx.rank, ctx.world_size, self.strong_view(cfg, script),
                                                           split=train)
            self.test_loader = dataset.build_test_loader(cfg, batch_size=256, num_workers=cfg.num_workers)
            self.val_loader = None if held is None else dataset.build_test_loader(cfg, 256, cfg.num_workers, split=held)
        self.logger, self.early_lines = None, []
        for note in self.run.notes:
            self.log(note)
        requeued = os.environ.get("ASKD_REQUEUES", "0/0")  # helper/requeue.py: a Slurm job's requeues
        if not requeued.startswith("0/"):
            self.log(f"requeued after a preemption or time limit ({requeued.replace('/', ' of at most ')})")
        if self.val_loader is not None:
            self.log(f"val_split {cfg.val_split}: {len(self.val_loader.dataset)} training images held out (seeded, "
                     f"class-stratified) to choose the best checkpoint; {len(self.train_loader.dataset)} to train on")
        state = self.run.resume_state
        self.log(f"run folder {self.run.path} on {self.device}" +
                 (f" x {ctx.world_size} processes" if ctx.enabled else "") +
                 (f", resuming after epoch {state['epoch']}" if state else "") +
                 (f" (in epoch {state['partial']['epoch']} after step {state['partial']['steps']}, where a "
                  f"preemption stopped it)" if state and state.get("partial") else ""))
        self.log(threads)

    @staticmethod
    def uses_cache(cfg, script):
        return script == "student" and cfg.teacher_cache != "off"

    @staticmethod
    def strong_view(cfg, script):
        from distillers import method_class
        return script == "student" and method_class(cfg.distill)[0].strong_view

    def log(self, text):
        """Print now; written to log.txt once the run folder is created (after every check)."""
        if self.logger is None:
            if self.ctx.is_main:
                print(text, flush=True)
            self.early_lines.append(text)
        else:
            self.logger.message(text)

    def open_run_folder(self):
        """Create the run folder: only once everything that could fail on bad input has passed."""
        if not self.ctx.is_main:
            self.logger = NullLogger()
            return
        self.run.create(self.cfg)
        self.logger = RunLogger(self.run.path, self.cfg.tensorboard)
        self.logger.write_lines(self.early_lines)

    def build_model(self, name, kwargs):
        seed_everything(self.cfg.seed, "weights", name)
        model = build_model(name, self.spec.num_classes, self.spec.image_size, kwargs)
        if self.cfg.sync_bn and self.ctx.enabled and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return self.place(model, name)

    def place(self, model, name, size=None):
        """`model` on the run's device, in its memory format, compiled when asked (in place:
        the state_dict keys stay those of the zoo), told the data set's image size (its
        `input_size`: the dry forward passes that size features use it). Student and teacher alike."""
        model.input_size = self.spec.image_size
        model = model.to(self.device)
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.check_input_size(model, name, size)
        if self.cfg.compile:
            model.compile()
        return model

    @torch.no_grad()
    def check_input_size(self, model, name, size=None):
        """One eval-mode forward of one image of the data set's size (BN statistics untouched):
        a model that cannot take it (e.g. a fixed 8x8 pooling before its classifier, a ViT built
        for another size) is a one-line error before the run folder exists. `size`: the size the
        model is built for, where it differs (a teacher behind teacher_input_size)."""
        was_training = model.training
        try:
            model.eval()(torch.zeros(1, 3, self.spec.image_size, self.spec.image_size, device=self.device))
        except (RuntimeError, AssertionError) as e:  # (timm asserts a ViT's input size)
            side = self.spec.image_size
            behind = f" (resized to {size}x{size}: teacher_input_size)" if size and size != side else ""
            raise UserError(f"model {name} cannot take the {side}x{side} images of {self.spec.name}{behind} "
                            f"({str(e).splitlines()[0][:120]}): use a model whose pooling adapts to the "
                            f"input size, or build it for this size (docs/datasets.md)") from None
        finally:
            model.train(was_training)

    def min_batch(self, distiller):
        """The smallest batch a step trains: the method's `min_batch`, or 2 where a BatchNorm of a
        model in training mode would see one value per channel (models/contract.py); a batch_size
        that gives each process less is refused."""
        trained = [distiller.student] + ([distiller.teacher] if distiller.teacher_train_mode else [])
        need = max([distiller.min_batch] + [smallest_trainable_batch(m, self.spec.image_size) for m in trained])
        per_rank = self.cfg.batch_size // self.ctx.world_size
        if per_rank < need:
            where = f" per process ({self.ctx.world_size} processes)" if self.ctx.enabled else ""
            raise UserError(f"a BatchNorm of {type(distiller.student).__name__} in training mode sees a single value "
                            f"per channel for one {self.spec.image_size}-pixel image, so it needs batches of "
                            f"{need}{where}, but batch_size {self.cfg.batch_size} gives {per_rank}: set batch_size "
                            f"{need * self.ctx.world_size} or more, or a larger input")
        return need

    def train(self, student, teacher, on_evaluated=None):
        from distillers import build
        targets = torch.as_tensor(self.train_loader.dataset.targets)
        distiller = build(self.cfg, student, teacher, targets).to(self.device)
        deployed = distiller.deployed
        if deployed is not distiller.student:
            count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
            self.log(f"method {self.cfg.distill} deploys {type(deployed).__name__}: {count(deployed):,} parameters "
                     f"(the student alone {count(distiller.student):,}); its test accuracy and checkpoints are that model's")
        if teacher is not None and self.cfg.teacher_cache != "off":
            distiller.use_teacher_cache(teacher_cache.open_cache(
                self.cfg, type(distiller), teacher, self.train_loader, self.spec, self.device, self.log))
        min_batch = self.min_batch(distiller)
        try:
            self.open_run_folder()
            trainer = Trainer(self.cfg, distiller, self.train_loader, self.test_loader, self.run,
                              self.logger, self.device, self.ctx, val_loader=self.val_loader, min_batch=min_batch,
                              num_classes=self.spec.num_classes, on_evaluated=on_evaluated)
            return trainer.fit(self.run.resume_state)
        finally:
            if self.logger is not None:
                self.logger.close()
            self.run.release()
            distributed.shutdown()


def distil(cfg_path, overrides=(), on_evaluated=None):
    """train_student.py: load the teacher, report its test accuracy, build the student, train;
    returns the best test top-1. `on_evaluated(epoch, val_top1)`: called after each evaluated epoch
    with the validation score alone (val_split; tune.py's pruning)."""
    session = Session(cfg_path, overrides, script="student")
    cfg = session.cfg
    teacher = build_teacher(session)
    accuracy = evaluate(teacher, session.test_loader, session.device)
    session.log(f"teacher {cfg.model_t} from {cfg.path_t}: test top-1 {accuracy['top1']:.2f} "
                f"top-5 {accuracy['top5']:.2f}")
    warning = check_teacher_accuracy(cfg.model_t, accuracy["top1"], dataset=cfg.dataset)
    if warning:
        session.log(warning)
    student = session.build_model(cfg.model_s, cfg.model_s_kwargs)
    return session.train(student, teacher, on_evaluated)


def build_teacher(session, weights=True):
    """The teacher of a student run, on the session's device, in eval mode, with path_t's weights
    (`weights` False: the architecture alone, as --check builds it when path_t is not found)."""
    cfg = session.cfg
    size = cfg.teacher_input_size or session.spec.image_size
    if weights:
        teacher = load_teacher(cfg.model_t, cfg.path_t, session.spec.num_classes, image_size=size,
                               kwargs=cfg.model_t_kwargs)
    else:
        teacher = build_model(cfg.model_t, session.spec.num_classes, size, cfg.model_t_kwargs, key="model_t").eval()
    if cfg.teacher_input_size:
        teacher = ResizedInput(teacher, cfg.teacher_input_size)
    return session.place(teacher, cfg.model_t, size)
