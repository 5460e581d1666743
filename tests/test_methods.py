"""Every shipped distillation config builds and steps (every method's own checks: tests/test_battery.py); KD with a
trained teacher beats the student alone on a data-poor synthetic task."""
import glob
import os

import pytest
import torch

import dataset
from distillers import build
from helper.battery import calibrated, make_batch
from helper.config import load_config
from helper.trainer import Trainer
from models import model_dict
from data_poor import final_accuracy
from runs import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "kds", "*", "*.yaml")))
PAPER_METHODS = {"kd", "fitnet", "at", "fsp", "rkd", "cc", "sp", "crd", "ours"}


# the heterogeneous pairs: OFA-KD's README pair (OFA-KD and its baselines), DeiT's example
HETERO = {"swin_t_resnet18.yaml", "resnet18_deit_tiny.yaml"}


def test_the_paper_grid_is_shipped():
    paper = [p for p in CONFIGS if os.path.basename(os.path.dirname(p)) in PAPER_METHODS
             and os.path.basename(p) not in HETERO]
    assert {os.path.basename(os.path.dirname(p)) for p in paper} == PAPER_METHODS
    assert len(paper) == 8 * 11 + 4
    pairs = {os.path.basename(p) for p in paper}
    assert len(pairs) == 11
    # every other method's files use the paper's pair names, and the two more pairs the logit
    # methods' originals publish (resnet56 -> resnet20, vgg13 -> vgg8)
    for path in CONFIGS:
        assert os.path.basename(path) in pairs | {"res56_res20.yaml", "vgg13_vgg8.yaml"} | HETERO, path


@pytest.fixture(scope="module")
def models_cache():
    """Teachers by name, their BN statistics calibrated on random images (FT's paraphraser would
    diverge on a fresh teacher's raw features)."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = calibrated(model_dict[name](num_classes=100))
        return cache[name]
    return get


@pytest.mark.parametrize("path", [p for p in CONFIGS if os.path.basename(p) not in HETERO],
                         ids=lambda p: "/".join(p.split(os.sep)[-2:]))
def test_every_shipped_config_builds_and_steps(path, synthetic_dir, models_cache):
    crd = ["nce_k", "64"] if os.path.basename(os.path.dirname(path)) == "crd" else []
    cfg = load_config(path, ["dataset", "synthetic", "data_dir", synthetic_dir, "synthetic_train_size", "600",
                             "synthetic_test_size", "200", "device", "cpu", "learning_rate", "0.01", *crd],
                      "student")
    torch.manual_seed(0)
    student = model_dict[cfg.model_s](num_classes=100)
    teacher = models_cache(cfg.model_t)
    targets = torch.as_tensor(dataset.read_split(synthetic_dir, "train")[1])
    distiller = build(cfg, student, teacher, targets)
    trainer = Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))
    image, target, index = make_batch(distiller, targets[:4], torch.arange(4), seed=0)
    stage = distiller.init_stage()
    if stage is not None:  # as the loop runs it: the stage's frozen modules train in the stage
        params = list(stage.modules.parameters())
        frozen = [p for p in params if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        _, losses, loss = trainer.step(trainer.make_optimizer(params, lr=stage.lr),
                                       lambda *b: (None, stage.losses(*b)), image, target, index)
        assert torch.isfinite(loss)
        for p in frozen:
            p.requires_grad_(False)
    logits, losses, loss = trainer.step(trainer.optimizer, distiller, image, target, index)
    assert logits.shape == (4, 100) and torch.isfinite(loss)
    expected = {"kd": {"ce", "kd"}, "fsp": {"ce"}, "abound": {"ce"}}.get(cfg.distill, None)
    if expected is not None:
        assert set(losses) == expected
    else:
        assert len(losses) >= 2  # ce and the method's own term(s)


@pytest.mark.xdist_group("data_poor")  # one process trains its teacher and lone student once
def test_kd_from_a_trained_teacher_beats_the_student_alone(tmp_path_factory):
    """The data-poor task (tests/data_poor.py: the teacher learns from 2000 images, the student
    sees 300), alone or with Hinton KD."""
    results = {"alone": final_accuracy(tmp_path_factory, "alone"),
               "kd": final_accuracy(tmp_path_factory, "kd", distill="kd", alpha=0.9, beta=0.0)}
    print(f"\ndata-poor synthetic task, final test top-1: {results}")
    assert results["kd"] > results["alone"] + 3.0, results


def test_every_vanilla_config_loads_with_the_paper_protocol():
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "train_vanilla", "*.yaml")))
    names = {os.path.basename(p)[:-5] for p in paths}
    assert names == {"resnet32x4", "resnet110", "resnet56", "wrn_40_2", "vgg13", "ResNet50", "resnet8x4",
                     "resnet32", "resnet20", "wrn_16_2", "wrn_40_1", "vgg8", "MobileNetV2", "ShuffleV1",
                     "ShuffleV2"}
    for path in paths:
        cfg = load_config(path, script="teacher")
        assert (cfg.epochs, cfg.batch_size, cfg.lr_decay_epochs) == (240, 64, [150, 180, 210])
        assert (cfg.weight_decay, cfg.momentum, cfg.lr_decay_rate) == (5e-4, 0.9, 0.1)
        assert cfg.learning_rate == (0.01 if cfg.model in ("MobileNetV2", "ShuffleV1", "ShuffleV2") else 0.05)
