"""Tiny-ImageNet's models and configs (mdistiller's pairs ResNet18 -> MobileNetV2 and -> ShuffleV2):
MobileNetV2_tiny against figures measured on mdistiller's own `mobilenetv2_tinyimagenet`
(tests/reference/zoo/MobileNetV2_tiny_mdistiller.json), the three models at 64x64 with 200 classes,
every configs/tiny_imagenet file built on its pair, and the README's two commands (teacher, then
student) run for two steps each on a generated tiny-imagenet-200 tree."""
import json
from pathlib import Path

import pytest
import torch

import distillers
import evaluate
from common.errors import UserError
from helper.config import load_config
from layouts import write_tiny_imagenet
from models import model_dict
from runs import call_cli, run_script, weights
from test_imagenet_configs import CIFAR_ONLY as IMAGENET_CIFAR_ONLY
from tests.deterministic import fill_deterministic

REFERENCE = Path(__file__).parent / "reference" / "zoo" / "MobileNetV2_tiny_mdistiller.json"
CONFIGS = Path(__file__).parent.parent / "configs" / "tiny_imagenet"
PAIRS = {"r18_mv2": ("ResNet18", "MobileNetV2_tiny"), "r18_shuv2": ("ResNet18", "ShuffleV2")}
MODELS = ["ResNet18", "MobileNetV2_tiny", "ShuffleV2"]
FILES = sorted(CONFIGS.glob("r18_*/*.yaml"))
# the methods that refuse the pair, so no file ships: FSP and KDSVD need equal channel counts; OFD
# refuses the ResNet18 teacher; AB's connectors cannot take 33x33 to 64x64 (MobileNetV2_tiny) nor
# pair ShuffleV2's 3 maps with ResNet18's 4; FitNet's hint_layer 2 pairs 17x17 with 32x32
NOT_APPLICABLE = {"r18_mv2": {"FSP", "KDSVD", "OFD", "AB", "FitNet"}, "r18_shuv2": {"FSP", "KDSVD", "OFD", "AB"}}


def image64(batch):
    """`fixed_input`'s rule at Tiny-ImageNet's size: N(0, 1) in float64 from generator seed 0."""
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_mobilenetv2_tiny_equals_mdistiller():
    ref = json.loads(REFERENCE.read_text())
    model = fill_deterministic(model_dict["MobileNetV2_tiny"](num_classes=ref["num_classes"]).double())
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(ref["state_dict"].items())
    filled = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in ("train", "eval"):
        model.load_state_dict(filled)
        with torch.no_grad():
            feats, logits = model.train(mode == "train")(image64(4), is_feat=True)
        want = ref[mode]
        torch.testing.assert_close(logits, torch.tensor(want["logits"], dtype=torch.float64), rtol=1e-6, atol=1e-6)
        # mdistiller's feats, then its pooled_feat (N x 1280 x 1 x 1; ours flattened)
        pooled = feats[-1].view(*feats[-1].shape, 1, 1)
        for f, r in zip([*feats[:-1], pooled], [*want["feats"], want["pooled"]], strict=True):
            assert list(f.shape) == r["shape"]
            torch.testing.assert_close([f.mean().item(), f.std().item(), f.abs().mean().item()],
                                       [r["mean"], r["std"], r["abs_mean"]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_models_at_64_with_200_classes(name):
    torch.manual_seed(0)
    model = model_dict[name](num_classes=200).train()
    assert getattr(model, "input_size", None) == (64 if name == "MobileNetV2_tiny" else None)
    x = torch.randn(2, 3, 64, 64)
    feats, logits = model(x, is_feat=True)
    pre_feats, pre_logits = model(x, is_feat=True, preact=True)
    assert logits.shape == (2, 200) and torch.equal(pre_logits, logits)
    assert feats[-1].shape == (2, {"ResNet18": 512, "MobileNetV2_tiny": 1280, "ShuffleV2": 1024}[name])
    assert [f.shape for f in pre_feats] == [f.shape for f in feats]
    if name == "MobileNetV2_tiny":   # no pre-activation features; the classifier is a 1x1 conv
        assert all(torch.equal(f, p) for f, p in zip(feats, pre_feats, strict=True))
        assert [f.shape[-1] for f in feats[:-1]] == [66, 33, 17, 9, 9]
        torch.testing.assert_close(model.conv2(feats[-1][:, :, None, None]).flatten(1), logits)
        assert [bn.num_features for bn in model.get_bn_before_relu()] == [f.shape[1] for f in feats[1:-1]]
    assert isinstance(model.get_feat_modules(), torch.nn.ModuleList)
    (logits.square().mean() + sum(f.mean() for f in feats)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_protocol(path):
    cfg = load_config(str(path), script="student")
    assert (cfg.batch_size, cfg.epochs, cfg.learning_rate, cfg.lr_decay_epochs, cfg.lr_decay_rate,
            cfg.weight_decay, cfg.momentum) == (256, 200, 0.2, [60, 120, 160], 0.1, 5e-4, 0.9)
    assert (cfg.dataset, cfg.data_dir, (cfg.model_t, cfg.model_s)) == ("tiny_imagenet", "", PAIRS[path.parent.name])
    assert cfg.path_t == "./save/teacher_model/tiny_imagenet/ResNet18_vanilla.pth"
    assert cfg.save_folder == f"./save/student_model/tiny_imagenet/{path.stem}/{path.parent.name}"
    if cfg.distill == "kd":   # mdistiller's KD: CE 0.1, KD 0.9 at T 4; kd_dot adds DOT (delta 0.075)
        assert (cfg.gamma, cfg.alpha, cfg.kd_T) == (0.1, 0.9, 4)
        assert (cfg.optimizer, cfg.dot_delta) == (("dot", 0.075) if path.stem == "kd_dot" else ("sgd", 0.075))


@pytest.mark.parametrize("name", MODELS)
def test_train_vanilla(name):
    cfg = load_config(str(CONFIGS / "train_vanilla" / f"{name}.yaml"), script="teacher")
    assert (cfg.model, cfg.dataset, cfg.data_dir, cfg.batch_size, cfg.epochs, cfg.learning_rate,
            cfg.lr_decay_epochs) == (name, "tiny_imagenet", "", 256, 200, 0.2, [60, 120, 160])


# the methods that ship no Tiny-ImageNet files: those with CIFAR-100 files only, and SRD (ImageNet's recipe besides)
CIFAR_ONLY = IMAGENET_CIFAR_ONLY | {"SRD"}


@pytest.fixture(scope="module")
def models():
    """Each model of the pairs, built once with 200 classes, told 64x64 (as a run's Session does)."""
    built = {}
    for name in MODELS:
        torch.manual_seed(0)
        built[name] = model_dict[name](num_classes=200)
        built[name].input_size = 64
    return built


@pytest.mark.parametrize("pair", PAIRS)
def test_every_method_that_builds_on_the_pair_has_a_file(pair, models):
    """Each file builds on its pair; each method without a file refuses the pair in one line."""
    teacher, student = (models[name] for name in PAIRS[pair])
    targets = torch.arange(20000) % 200   # CRD's memories: 20000 rows stand in for 100000
    covered = set()
    for path in CONFIGS.joinpath(pair).glob("*.yaml"):
        cfg = load_config(str(path), script="student")
        assert distillers.build(cfg, student, teacher, targets).student is student, path
        covered.add(distillers.METHODS[cfg.distill].__name__)
    methods = {cls.__name__ for name, cls in distillers.METHODS.items() if name != "vanilla"} - CIFAR_ONLY
    assert covered == methods - NOT_APPLICABLE[pair]
    kd = CONFIGS / pair / "kd.yaml"
    for name, cls in distillers.METHODS.items():
        if cls.__name__ in NOT_APPLICABLE[pair]:
            with pytest.raises(UserError):
                distillers.build(load_config(str(kd), ["distill", name], "student"), student, teacher, targets)


@pytest.mark.filterwarnings("ignore:.*classes, not 200")
def test_readme_commands_train_two_steps(tmp_path, write_cfg):
    """train_vanilla/ResNet18.yaml, then r18_mv2/kd_dot.yaml with that teacher: one epoch of two
    steps each (8 training images of 4 classes, batch 4) on a generated tiny-imagenet-200 tree;
    then evaluate.py on the student's bare state dict tells model and data set from its keys."""
    data = str(tmp_path / "data")
    write_tiny_imagenet(data, ["n01443537", "n01629819", "n01641577", "n01644900"], train_per_class=2)
    small = ["data_dir", data, "batch_size", 4, "epochs", 1, "lr_decay_epochs", 1, "num_workers", 0,
             "device", "cpu", "tensorboard", False, "print_freq", 1]
    code, out, err = run_script("train_teacher.py", str(CONFIGS / "train_vanilla" / "ResNet18.yaml"), *small,
                                "save_folder", tmp_path / "teacher")
    assert code == 0, out + err
    teacher = tmp_path / "teacher" / "ResNet18_last.pth"
    code, out, err = run_script("train_student.py", str(CONFIGS / "r18_mv2" / "kd_dot.yaml"), *small,
                                "path_t", teacher, "save_folder", tmp_path / "student")
    assert code == 0, out + err
    log = (tmp_path / "student" / "log.txt").read_text()
    assert "epoch 1 " in log and " train_kd " in log
    bare = tmp_path / "bare.pth"
    torch.save(weights(str(tmp_path / "student" / "MobileNetV2_tiny_last.pth")), bare)
    code, out = call_cli(evaluate, [str(bare), "data_dir", data, "num_workers", "0", "--json", "--device", "cpu"])
    assert code == 0, out
    result = json.loads(out[out.index("{"):])
    assert (result["model"], result["dataset"], result["images"]) == ("MobileNetV2_tiny", "tiny_imagenet", 4)
