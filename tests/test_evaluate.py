"""evaluate.py: the top-1 of the epoch that wrote a checkpoint, from every checkpoint of a run
folder and from the other formats it reads; each bad input one line, nothing left behind."""
import json
import os
import re

import numpy as np
import pytest
import torch
import yaml

import dataset
import evaluate
from helper.evaluate import data_config
from models import model_dict
from tests.layouts import write_image_folder
from tests.runs import call_cli, run_script, tiny_config, weights


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch resnet8 run on a small synthetic set: (run folder, its data folder, last epoch's scores)."""
    root = tmp_path_factory.mktemp("evaluate")
    cfg = tiny_config(str(root / "data"), str(root / "run"), epochs=1, lr_decay_epochs="1",
                      synthetic_train_size=128, synthetic_test_size=100)
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = run_script("train_teacher.py", str(root / "cfg.yaml"))
    assert code == 0, err
    last = [line for line in (root / "run" / "log.txt").read_text().splitlines() if line.startswith("epoch 1 ")][-1]
    scores = dict(re.findall(r"(test_acc|test_acc_top5) (\S+)", last))
    return root / "run", str(root / "data"), {k: float(v) for k, v in scores.items()}


def score(*argv):
    code, out = call_cli(evaluate, [*map(str, argv), "--json", "--device", "cpu"])
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def set_of(run):
    """KEY VALUE pairs naming the run's synthetic set (its config.yaml does when beside the checkpoint)."""
    return ["data_dir", run[1], "synthetic_train_size", "128", "synthetic_test_size", "100", "num_workers", "0"]


@pytest.mark.parametrize("name", ["resnet8_last.pth", "resnet8_best.pth", "ckpt_epoch_1.pth", "latest.pth"])
def test_every_checkpoint_of_a_run_scores_as_its_last_epoch(run, name):
    folder, _, logged = run
    result = score(folder / name)   # model and data set from the run's config.yaml
    assert (result["model"], result["dataset"], result["images"]) == ("resnet8", "synthetic", 100)
    assert float(f"{result['top1']:.6g}") == logged["test_acc"]
    assert float(f"{result['top5']:.6g}") == logged["test_acc_top5"]


def test_released_formats_without_a_run_folder(run, tmp_path):
    """A bare state dict (torchvision's format) and a CRD teacher file (legacy format, numpy lr),
    away from the run folder: the model is recognised by its keys; --dataset / KEY VALUE say the rest."""
    folder, _, logged = run
    state = weights(folder / "resnet8_last.pth")
    torch.save(dict(state), tmp_path / "resnet8-0123abcd.pth")
    optimizer = {"state": {}, "param_groups": [{"lr": np.float64(0.05) * np.float64(0.1) ** np.int64(3)}]}
    torch.save({"epoch": 240, "model": state, "optimizer": optimizer}, tmp_path / "ckpt_epoch_240.pth",
               _use_new_zipfile_serialization=False)
    for name in ("resnet8-0123abcd.pth", "ckpt_epoch_240.pth"):
        result = score(tmp_path / name, "--dataset", "synthetic", *set_of(run), "--batch-size", 32)
        assert result["model"] == "resnet8" and float(f"{result['top1']:.6g}") == logged["test_acc"]
    code, out = call_cli(evaluate, [str(tmp_path / "ckpt_epoch_240.pth"), "--model", "resnet8", "--dataset",
                                    "synthetic", *set_of(run), "--device", "cpu"])
    assert code == 0 and re.fullmatch(r"cpu: 1 torch thread \(OMP_NUM_THREADS=1\)\n"
                                      r"resnet8 on synthetic \(100 test images\): top-1 [\d.]+  top-5 [\d.]+  "
                                      r"loss [\d.]+\n", out), out


@pytest.mark.filterwarnings("ignore:.*class folders, not")
def test_imagenet_weights_in_torchvisions_format(tmp_path):
    """A bare 1000-class state dict on an ImageFolder tree: the data set told by the class count,
    the model by its keys; the figures of a direct forward over the same test split."""
    root = str(tmp_path / "imagenet")
    write_image_folder(root, ["n01440764", "n01443537"], train_per_class=1, val_per_class=2, height=60, width=80)
    torch.manual_seed(0)
    model = model_dict["MobileNetV1"](num_classes=1000).eval()
    with torch.no_grad():
        model.fc.bias[0] = 50.0   # every image called class 0: half of them right
    torch.save(model.state_dict(), tmp_path / "mobilenetv1-0123abcd.pth")
    result = score(tmp_path / "mobilenetv1-0123abcd.pth", "data_dir", root, "num_workers", "0")
    assert (result["model"], result["dataset"], result["images"], result["top1"]) == ("MobileNetV1", "imagenet", 4, 50.0)
    image, target, _ = next(iter(dataset.build_test_loader(data_config("imagenet", root))))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(image), target).item()
    assert image.shape == (4, 3, 224, 224) and result["loss"] == pytest.approx(loss, rel=1e-5)


def bad_inputs(folder, tmp):
    (tmp / "notes.pth").write_text("not a checkpoint")
    missing_data = ["data_dir", str(tmp / "nowhere"), "download", "False"]
    return {
        "not a checkpoint": ([tmp / "notes.pth", "--model", "resnet8", "--dataset", "cifar100"],
                             "corrupt or not a PyTorch checkpoint"),
        "no such file": ([tmp / "none.pth"], "does not exist"),
        "another architecture": ([folder / "resnet8_last.pth", "--model", "resnet14"],
                                 "looks like a resnet8 checkpoint, not resnet14"),
        "another class count": ([folder / "resnet8_last.pth", "--dataset", "cifar10"], "10"),
        "data missing": ([folder / "resnet8_last.pth", "--dataset", "cifar100", *missing_data], "nowhere"),
        "unknown model": ([folder / "resnet8_last.pth", "--model", "resnet9"], "unknown model 'resnet9'"),
        "unknown data set": ([folder / "resnet8_last.pth", "--dataset", "mnist"], "mnist"),
        "unrecognised weights": ([tmp / "odd.pth", "--dataset", "cifar100"], "pass --model NAME"),
    }


def test_bad_input_is_one_line_and_leaves_nothing(run, tmp_path):
    folder, _, _ = run
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1), "fc.weight": torch.zeros(100, 3)}, tmp_path / "odd.pth")
    cases = bad_inputs(folder, tmp_path)
    before = sorted(os.listdir(folder)), sorted(os.listdir(tmp_path))
    for case, (argv, expected) in cases.items():
        code, out = call_cli(evaluate, [*map(str, argv), "--device", "cpu"])
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, out)
        assert expected in lines[0] and "Traceback" not in out, (case, lines[0])
    assert (sorted(os.listdir(folder)), sorted(os.listdir(tmp_path))) == before
