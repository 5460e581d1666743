"""timm's training recipe as config keys (helper/recipe.py, dataset/timm_transform.py): each part
against timm's own function on the same inputs (the learning-rate trace, Mixup's output for a seed,
the transforms' output for a seed, the EMA's weights after N steps, clipping, AdamW's groups, the
losses), the defaults leave the paper's configs' steps bit for bit as the plain SGD loop makes them,
bad values are refused in one line before the run folder exists, and the shipped recipes run."""
import copy
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from common.errors import UserError
from distillers import build
from helper.config import get_cfg_defaults, load_config
from helper.recipe import Recipe
from helper.trainer import Trainer, seed_everything
from models import build_model, model_dict
from runs import ROOT, call_cli, make_cfg, run_script, tiny_config, weights

RECIPE = dict(optimizer="adamw", learning_rate=1e-3, weight_decay=0.05, lr_schedule="cosine", lr_warmup_epochs=1,
              warmup_lr=1e-5, min_lr=1e-5, sched_on_updates=True, label_smoothing=0.1, mixup=0.8, cutmix=1.0,
              transform="timm", auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25, clip_grad=5.0, model_ema=True,
              model_ema_decay=0.9)


def recipe_cfg(**keys):
    cfg = get_cfg_defaults()
    for key, value in keys.items():
        cfg[key] = value
    return cfg


class Batches(list):
    """A loader of fixed batches (image, target, index), as the loop iterates one."""

    @property
    def sampler(self):
        return range(sum(len(b[1]) for b in self))


def batch(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 100, (n,), generator=gen), torch.arange(n)


@pytest.mark.parametrize("on_updates", [False, True], ids=["per_epoch", "per_update"])
def test_the_cosine_rates_are_timms_as_its_loop_steps_them(on_updates):
    from timm.scheduler import CosineLRScheduler
    epochs, steps = 7, 5
    cfg = recipe_cfg(lr_schedule="cosine", epochs=epochs, learning_rate=0.1, lr_warmup_epochs=2, warmup_lr=1e-3,
                     min_lr=1e-4, sched_on_updates=on_updates)
    recipe = Recipe(cfg, None, steps)
    ours = [recipe.lr(e, s) for e in range(1, epochs + 1) for s in range(1, steps + 1)]
    scale = steps if on_updates else 1  # timm's train.py: its scheduler built and stepped as here
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs * scale, lr_min=1e-4, warmup_t=2 * scale,
                                  warmup_lr_init=1e-3, t_in_epochs=not on_updates)
    theirs, updates = [], 0
    for epoch in range(epochs):
        for _ in range(steps):
            theirs.append(optimizer.param_groups[0]["lr"])
            updates += 1
            scheduler.step_update(num_updates=updates)
        scheduler.step(epoch + 1)
    assert ours == theirs
    assert ours[0] == 1e-3 and ours[-1] > 1e-4 and len(set(ours)) == (epochs * steps if on_updates else epochs)


def test_a_run_trains_each_step_at_the_schedules_rate(synthetic_dir, tmp_path, write_cfg, monkeypatch):
    rates = []
    set_lr = Trainer.set_lr
    monkeypatch.setattr(Trainer, "set_lr", lambda self, lr: (rates.append(lr), set_lr(self, lr)))
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), epochs=3, lr_schedule="cosine", lr_warmup_epochs=1,
                      sched_on_updates=True, learning_rate=0.1, warmup_lr=1e-3, min_lr=1e-4)
    code, out, err = run_script("train_teacher.py", write_cfg(cfg))
    assert code == 0, out + err
    recipe = Recipe(load_config(os.path.join(tmp_path, "run", "config.yaml")), None, 10)  # 600 images, batch 64
    expected = [recipe.lr(e, s) for e in range(1, 4) for s in [1] + list(range(1, 11))]  # each epoch's start, each step
    assert rates == expected


def test_mixup_is_timms_on_the_loops_batch():
    """The distiller receives what timm's Mixup makes of the batch from the same RNG state: the
    mixed images (student and teacher alike) and the soft targets."""
    from timm.data import Mixup
    keys = dict(mixup=0.8, cutmix=1.0, label_smoothing=0.1, mixup_switch_prob=0.5)
    cfg = make_cfg("kd", alpha=0.9, **keys)
    student, teacher = model_dict["resnet8"](num_classes=100), model_dict["resnet8"](num_classes=100)
    distiller = build(cfg, student, teacher)
    seen = []
    forward = distiller.forward
    distiller.forward = lambda image, target, *rest: (seen.append((image.clone(), target.clone())),
                                                      forward(image, target, *rest))[1]
    image, target, index = batch()
    loader = Batches([(image.clone(), target.clone(), index) for _ in range(3)])  # (Mixup mixes in place)
    trainer = Trainer(cfg, distiller, loader, None, None, None, torch.device("cpu"), num_classes=100)
    seed_everything(0, "mix")
    trainer.train_epoch("epoch 1/1", trainer.train_step, cfg.learning_rate, epoch=1)
    seed_everything(0, "mix")
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=100)
    for mixed, soft in seen:
        expected_image, expected_target = mixup(image.clone(), target.clone())
        assert torch.equal(mixed, expected_image) and torch.equal(soft, expected_target)
    assert len(seen) == 3 and not torch.equal(seen[0][0], seen[1][0])  # a new mix every step


def test_an_odd_final_batch_is_dropped_under_mixup():
    cfg = make_cfg("vanilla", mixup=0.8)
    distiller = build(cfg, model_dict["resnet8"](num_classes=100))
    full, odd = batch(8), batch(5, seed=1)
    trainer = Trainer(cfg, distiller, Batches([full, odd]), None, None, None, torch.device("cpu"), num_classes=100)
    stats = trainer.train_epoch("epoch 1/1", trainer.train_step, cfg.learning_rate, epoch=1)
    assert stats["dropped"] == 5


@pytest.mark.parametrize("augment", ["rand-m9-mstd0.5-inc1", "augmix-m5-w4-d2", ""])
def test_the_transforms_are_timms_for_a_seed(augment):
    from timm.data import create_transform
    cfg = recipe_cfg(dataset="cifar100", transform="timm", input_size=48, auto_augment=augment, reprob=0.5,
                     crop_pct=0.9, interpolation="bilinear")
    spec = dataset.data_spec(cfg)
    assert spec.image_size == 48 and spec.pad == 0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mean, std = spec.mean, spec.std
    theirs = {True: create_transform(48, is_training=True, auto_augment=augment or None, interpolation="random",
                                     mean=mean, std=std, re_prob=0.5, re_mode="pixel", color_jitter=0.4),
              False: create_transform(48, is_training=False, interpolation="bilinear", mean=mean, std=std,
                                      crop_pct=0.9)}
    for training, ours in ((True, spec.train_transform()), (False, spec.test_transform())):
        outputs = []
        for transform in (ours, theirs[training]):
            random.seed(3)
            np.random.seed(3)
            torch.manual_seed(3)
            outputs.append(transform(image))
        assert outputs[0].shape == (3, 48, 48) and torch.equal(*outputs)


def test_the_ema_is_timms_average_of_the_steps_weights(synthetic_dir, tmp_path, write_cfg, monkeypatch):
    """After every step the EMA moves as timm's ModelEmaV3 with the update count: the first update
    copies the weights, then ema = d ema + (1 - d) w; `<model>_ema_last.pth` holds it."""
    from helper.recipe import Recipe as Parts
    snapshots = []
    update = Parts.update_ema
    monkeypatch.setattr(Parts, "update_ema", lambda self, distiller, epoch, step: (
        snapshots.append(copy.deepcopy(distiller.deployed.state_dict())), update(self, distiller, epoch, step)))
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), epochs=1, lr_decay_epochs="1", synthetic_train_size=600,
                      batch_size=128, model_ema=True, model_ema_decay=0.9)
    code, out, err = run_script("train_teacher.py", write_cfg(cfg))
    assert code == 0, out + err
    expected = {k: v.double() if v.is_floating_point() else v for k, v in snapshots[0].items()}
    for state in snapshots[1:]:
        for key, value in state.items():
            expected[key] = 0.9 * expected[key] + 0.1 * value.double() if value.is_floating_point() else value
    saved = weights(tmp_path / "run" / "resnet8_ema_last.pth")
    assert len(snapshots) == 5 and saved.keys() == expected.keys()
    for key, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-5, atol=1e-6)
        else:  # num_batches_tracked: copied
            assert torch.equal(value, expected[key]), key
    assert not torch.equal(saved["fc.weight"], weights(tmp_path / "run" / "resnet8_last.pth")["fc.weight"])
    assert (tmp_path / "run" / "resnet8_ema_best.pth").exists()
    # report.py --rule ema_last and evaluate.py --ema read the same EMA weights' test top-1
    import evaluate
    import report
    from helper.grid import read_log
    logged = read_log(str(tmp_path / "run"))[1]["ema_test_acc"]
    code, text = call_cli(report, [str(tmp_path), "--rule", "ema_last"])
    assert code == 0 and f"{logged:.2f}" in text, text
    code, text = call_cli(evaluate, [str(tmp_path / "run" / "latest.pth"), "--ema", "--json"])
    assert code == 0 and json.loads(text.splitlines()[-1])["top1"] == pytest.approx(logged), text


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clip_grad_is_timms(mode):
    from timm.utils import dispatch_clip_grad
    cfg = make_cfg("vanilla", clip_grad=0.05, clip_mode=mode, learning_rate=0.1)
    image, target, index = batch()
    results = []
    for ours in (True, False):
        torch.manual_seed(0)
        distiller = build(cfg, model_dict["resnet8"](num_classes=100))
        if ours:
            trainer = Trainer(cfg, distiller, Batches([(image, target, index)]), None, None, None, torch.device("cpu"))
            trainer.train_step(image, target, index)
        else:
            optimizer = torch.optim.SGD(distiller.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            sum(distiller(image, target, index)[1].values()).backward()
            dispatch_clip_grad(list(distiller.parameters()), 0.05, mode=mode)
            optimizer.step()
        results.append(distiller.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_adamw_is_timms_with_its_weight_decay_groups():
    """optimizer adamw is create_optimizer_v2's AdamW over the distiller, with the groups it makes of
    the bare student: no weight decay on norms, biases, position embedding and class token."""
    from timm.optim import create_optimizer_v2
    cfg = make_cfg("vanilla", optimizer="adamw", learning_rate=5e-4, weight_decay=0.05, opt_eps=1e-6,
                   opt_betas=[0.8, 0.99])
    student = build_model("timm:vit_tiny_patch16_224", 100, 32, {"patch_size": 4, "depth": 2})
    bare = copy.deepcopy(student)
    distiller = build(cfg, student)
    trainer = Trainer(cfg, distiller, Batches([batch()]), None, None, None, torch.device("cpu"))
    theirs = create_optimizer_v2(bare, opt="adamw", lr=5e-4, weight_decay=0.05, eps=1e-6, betas=(0.8, 0.99))
    assert type(trainer.optimizer) is type(theirs)

    def groups(optimizer, named, prefix):
        names = {id(p): prefix + name for name, p in named}
        return [(g["weight_decay"], g["eps"], g["betas"], sorted(names[id(p)] for p in g["params"]))
                for g in optimizer.param_groups]
    ours = groups(trainer.optimizer, distiller.named_parameters(), "")
    assert ours == groups(theirs, bare.named_parameters(), "student.")
    no_decay = next(names for decay, _, _, names in ours if decay == 0)
    assert {"student.pos_embed", "student.cls_token", "student.norm.weight", "student.head.bias"} <= set(no_decay)


def test_the_losses_are_timms():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(8, 100, generator=gen, dtype=torch.float64), torch.arange(8) * 13 % 100
    soft = torch.softmax(torch.randn(8, 100, generator=gen, dtype=torch.float64), dim=1)
    distiller = build(make_cfg("vanilla", label_smoothing=0.1), model_dict["resnet8"](num_classes=100))
    assert torch.equal(distiller.task_loss(logits, target), LabelSmoothingCrossEntropy(0.1)(logits, target))
    assert torch.equal(distiller.task_loss(logits, soft), SoftTargetCrossEntropy()(logits, soft))
    plain = build(make_cfg("vanilla"), model_dict["resnet8"](num_classes=100))
    assert torch.equal(plain.task_loss(logits, target), torch.nn.functional.cross_entropy(logits, target))


# the paper's nine methods and a teacher, on their shipped configs
PAPER_CONFIGS = ["kd/resnet32x4_resnet8x4", "fitnet/resnet32x4_resnet8x4", "at/resnet32x4_resnet8x4",
                 "fsp/res110_res20", "rkd/resnet32x4_resnet8x4", "cc/resnet32x4_resnet8x4", "sp/resnet32x4_resnet8x4",
                 "crd/resnet32x4_resnet8x4", "ours/resnet32x4_resnet8x4"]


@pytest.mark.parametrize("name", PAPER_CONFIGS + ["teacher"])
def test_the_defaults_keep_the_paper_configs_steps_bit_for_bit(name):
    """Two steps of the loop with the recipe keys at their defaults give the weights the plain
    loop gives (SGD with the config's momentum and weight decay, loss = the sum of the terms)."""
    if name == "teacher":
        cfg = load_config(os.path.join(ROOT, "configs/train_vanilla/resnet32x4.yaml"), ["device", "cpu"], "teacher")
        models = (cfg.model, None)
    else:
        cfg = load_config(os.path.join(ROOT, "configs/kds", name + ".yaml"), ["device", "cpu"], "student")
        models = (cfg.model_s, cfg.model_t)
    batches = Batches([batch(8, seed) for seed in (1, 2)])
    targets = torch.arange(50000) % 100  # CIFAR-100's training labels (CRD sizes its memory by them)
    results = []
    for ours in (True, False):
        torch.manual_seed(0)
        student = model_dict[models[0]](num_classes=100)
        teacher = model_dict[models[1]](num_classes=100) if models[1] else None
        distiller = build(cfg, student, teacher, targets)
        distiller.start_epoch(1)
        distiller.train()
        torch.manual_seed(1)
        if ours:
            trainer = Trainer(cfg, distiller, batches, None, None, None, torch.device("cpu"), num_classes=100)
            trainer.set_lr(trainer.recipe.lr(1))
            trainer.train_epoch("epoch 1/1", trainer.train_step, cfg.learning_rate, epoch=1)
        else:
            optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                        momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            for image, target, index in batches:
                loss = sum(distiller(image, target, index)[1].values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        results.append(distiller.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize("extra, says", [
    (dict(transform="timm", auto_augment="rand-zz9"), "auto_augment 'rand-zz9' is not an augmentation timm knows"),
    (dict(lr_schedule="cosine", lr_warmup_epochs=2), "a warm-up of 2 epochs leaves nothing of the 2 epochs"),
    (dict(lr_warmup_epochs=1), "set lr_schedule cosine"),
    (dict(label_smoothing=-0.1), "'label_smoothing' must be in [0, 1), got -0.1"),
    (dict(mixup=0.8, distill="dkd"), "method 'dkd' reads the batch's labels, which Mixup and CutMix make soft"),
    (dict(cutmix=1.0, distill="crd"), "method 'crd' reads the batch's labels"),
    (dict(mixup=0.8, batch_size=15), "batch_size must be even, got 15"),
    (dict(input_size=64), "input_size shape timm's transforms: set transform timm"),
    (dict(transform="timm", fast=True), "set fast false with transform timm"),
    (dict(mixup=0.8, fast=True, teacher_cache="auto"), "Mixup and CutMix show the teacher mixed images"),
    (dict(clip_grad=1.0, optimizer="dot"), "clip_grad with optimizer dot"),
    (dict(opt_betas="0.9"), "'opt_betas' takes two values"),
    (dict(remode="zero"), "'remode' must be one of const, rand, pixel"),
    (dict(model_ema_decay=1.0), "'model_ema_decay' must be in (0, 1)"),
])
def test_bad_recipe_values_are_refused_in_one_line(extra, says, synthetic_dir, teacher_file, tmp_path, write_cfg):
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), model_s="resnet8", model_t="resnet14",
                      path_t=teacher_file, distill="kd", alpha=0.9)
    cfg.pop("model")
    cfg.update(extra)
    code, out, err = run_script("train_student.py", write_cfg(cfg))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, out + err
    assert not (tmp_path / "run").exists()


def test_a_base_file_puts_a_recipe_under_a_config(tmp_path, write_cfg):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text("optimizer: adamw\nlearning_rate: 5e-4\nepochs: 30\n")
    (tmp_path / "kd.yaml").write_text("base: recipes/r.yaml\nmodel: resnet8\nepochs: 3\nlr_decay_epochs: 2\n")
    cfg = load_config(str(tmp_path / "kd.yaml"), ["device", "cpu"], "teacher")
    assert (cfg.optimizer, cfg.learning_rate, cfg.epochs) == ("adamw", 5e-4, 3)  # the file's own keys win
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\nmodel: resnet8\n")
    with pytest.raises(UserError, match="a cycle of base files"):
        load_config(str(tmp_path / "loop.yaml"), [], "teacher")
    (tmp_path / "missing.yaml").write_text("base: nowhere.yaml\nmodel: resnet8\n")
    with pytest.raises(UserError, match="its base nowhere.yaml .* is not a file"):
        load_config(str(tmp_path / "missing.yaml"), [], "teacher")


SHIPPED = [("train_teacher.py", "deit_tiny_cifar100", None), ("train_teacher.py", "resnet18_cifar100", None),
           ("train_student.py", "kd_resnet18_deit_tiny", "timm:resnet18"),
           ("train_student.py", "kd_deit_tiny_resnet18", "timm:deit_tiny_patch16_224")]


@pytest.mark.parametrize("script, name, teacher", SHIPPED, ids=[s[1] for s in SHIPPED])
def test_the_shipped_recipes_run_two_short_epochs(script, name, teacher, tmp_path):
    """Each shipped recipe config as it is, on 16 synthetic images at 64 pixels (the models built
    for that size), two epochs of one step with a one-epoch warm-up."""
    overrides = ["dataset", "synthetic", "data_dir", str(tmp_path / "data"), "synthetic_train_size", "16",
                 "synthetic_test_size", "8", "batch_size", "16", "epochs", "2", "lr_warmup_epochs", "1",
                 "input_size", "64", "num_workers", "0", "device", "cpu", "save_folder", str(tmp_path / "run"),
                 "tensorboard", "false"]
    if teacher:
        path = tmp_path / "teacher.pth"
        torch.save({"model": build_model(teacher, 100, 64, {}).state_dict()}, path)
        overrides += ["path_t", str(path)]
    code, out, err = run_script(script, os.path.join(ROOT, "configs/recipes", name + ".yaml"), *overrides)
    assert code == 0, out + err
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "\nepoch 2 " in log and "nan" not in log.split("\nepoch 1 ")[1]


def test_mixup_and_cutmix_train_on_the_fast_path(synthetic_dir, tmp_path, write_cfg):
    """The fast path's device batches are mixed as the plain path's (the recipe mixes in the loop)."""
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), fast=True, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
                      optimizer="adamw", learning_rate=1e-3, lr_schedule="cosine", model_ema=True)
    code, out, err = run_script("train_teacher.py", write_cfg(cfg))
    assert code == 0, out + err
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "\nepoch 2 " in log and "nan" not in log and " ema_test_acc " in log
