"""configs/imagenet/<pair>/<method>.yaml: mdistiller's ImageNet protocol, one file for every
method that applies to the pair, and each builds on it."""
from pathlib import Path

import pytest
import torch

import distillers
from helper.config import load_config
from models import model_dict

ROOT = Path(__file__).parent.parent / "configs" / "imagenet"
PAIRS = {"r34_r18": ("resnet34_imagenet", "resnet18_imagenet"), "r50_mv1": ("resnet50_imagenet", "MobileNetV1")}
FILES = sorted(ROOT.glob("*/*.yaml"))
# batch and learning rate of mdistiller's configs/imagenet files; the others 256 and 0.1
MDISTILLER = {"kd": (512, 0.2), "kd_dot": (512, 0.2), "at": (512, 0.2), "dkd": (512, 0.2), "crd": (256, 0.1),
              "reviewkd": (256, 0.1), "ofd": (128, 0.05)}
# the methods that refuse the pair: FSP and KDSVD need equal channel counts
NOT_APPLICABLE = {"r34_r18": set(), "r50_mv1": {"FSP", "KDSVD"}}
CHEAP_PROBE = 64   # input side of the dry forward passes below (the models' own is 224)


# the logit baselines of 2022-2025 papers, CAT-KD, SDD, SimKD, OFA-KD and DeiT ship CIFAR-100 configs only
# (docs/getting-started.md, docs/methods.md)
CIFAR_ONLY = {"DIST", "CTKD", "NKD", "TTM", "WTTM", "RLD", "LumiNet", "MLKD", "CATKD", "SDD", "SimKD", "OFA", "DeiT"}


def test_every_method_has_a_file_per_pair():
    methods = {cls.__name__ for name, cls in distillers.METHODS.items() if name != "vanilla"} - CIFAR_ONLY
    assert sorted(p.name for p in ROOT.iterdir()) == sorted(PAIRS)
    for pair in PAIRS:
        covered = {distillers.METHODS[load_config(str(f), script="student").distill].__name__
                   for f in ROOT.joinpath(pair).glob("*.yaml")}
        assert covered == methods - NOT_APPLICABLE[pair], pair


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_protocol(path):
    cfg = load_config(str(path), script="student")
    assert (cfg.epochs, cfg.lr_decay_epochs, cfg.lr_decay_rate, cfg.weight_decay, cfg.momentum) == \
           (100, [30, 60, 90], 0.1, 1e-4, 0.9)
    assert (cfg.dataset, (cfg.model_t, cfg.model_s)) == ("imagenet", PAIRS[path.parent.name])
    assert (cfg.batch_size, cfg.learning_rate) == MDISTILLER.get(path.stem, (256, 0.1))
    assert cfg.path_t == f"./save/teacher_model/imagenet/{cfg.model_t}_vanilla.pth"
    assert cfg.save_folder == f"./save/student_model/imagenet/{path.stem}/{path.parent.name}"
    if cfg.distill == "crd":
        assert cfg.nce_k == 16384


@pytest.fixture(scope="module")
def models():
    """Each model of the pairs, built once, probed at CHEAP_PROBE pixels."""
    built = {}
    for name in {n for pair in PAIRS.values() for n in pair}:
        torch.manual_seed(0)
        built[name] = model_dict[name](num_classes=1000)
        built[name].input_size = CHEAP_PROBE
    return built


def test_every_file_builds_on_its_pair(models):
    targets = torch.arange(20000) % 1000   # CRD's memories: 20000 rows stand in for 1.28M
    for path in FILES:
        cfg = load_config(str(path), script="student")
        distiller = distillers.build(cfg, models[cfg.model_s], models[cfg.model_t], targets)
        assert distiller.student is models[cfg.model_s], path


@pytest.mark.parametrize("pair", PAIRS)
def test_askd_builds_at_224(pair):
    """One build per pair at the models' own size (ASKD: its 7 x 7 maps split into r x r regions)."""
    teacher, student = (model_dict[name](num_classes=1000) for name in PAIRS[pair])
    assert teacher.input_size == student.input_size == 224
    cfg = load_config(str(ROOT / pair / "ours.yaml"), script="student")
    distiller = distillers.build(cfg, student, teacher)
    assert [a.in_channels for a in distiller.adapters] == [distiller.probe_feats(student)[-2].shape[1]]
