"""`dataset imagefolder`: any train/<class>/* + val/<class>/* tree, read by torchvision's ImageFolder
rules, through train_teacher.py, train_student.py and evaluate.py; a broken tree is one line."""
import json

import numpy as np
import pytest
import yaml
from PIL import Image

import evaluate
from runs import call_cli, run_script

CLASSES = ("albatross", "cardinal", "wren")


def write_tree(root, train=10, val=4, seed=0):
    """JPEG and PNG files of three classes, sizes 40..63 pixels, each class its own colour cast."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(40, 64, size=2)
                pixels = rng.integers(0, 120, size=(h, w, 3))
                pixels[..., c] += 120
                ext = "png" if i % 3 == 0 else "jpg"
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i}.{ext}")
    return root


def config(tmp_path, root, **extra):
    cfg = dict(dataset="imagefolder", data_dir=str(root), imagefolder_size=32, epochs=2, lr_decay_epochs="1",
               batch_size=8, num_workers=0, device="cpu", tensorboard=False, print_freq=100)
    cfg.update(extra)
    path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("imagefolder") / "birds")


def test_a_tree_trains_a_teacher_and_a_student_and_evaluates(tree, tmp_path):
    code, out, err = run_script("train_teacher.py", config(tmp_path, tree, model="resnet8",
                                                           save_folder=str(tmp_path / "teacher")))
    assert code == 0, out + err
    teacher = tmp_path / "teacher" / "resnet8_last.pth"
    code, out, err = run_script("train_student.py", config(
        tmp_path, tree, model_t="resnet8", path_t=str(teacher), model_s="resnet8", distill="kd", alpha=0.9,
        save_folder=str(tmp_path / "student")))
    assert code == 0, out + err
    last = [line for line in out.splitlines() if line.startswith("epoch 2 ")][0]
    accuracy = float(last.split(" test_acc ")[1].split()[0])
    code, out = call_cli(evaluate, [str(tmp_path / "student" / "resnet8_last.pth"), "--json", "--device", "cpu"])
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["dataset"] == "imagefolder" and result["images"] == 3 * 4
    assert result["top1"] == pytest.approx(accuracy, rel=1e-5, abs=1e-4)  # the log prints 6 digits


def test_the_classes_are_the_sorted_folders_of_train(tree):
    from dataset.imagefolder import read
    split = read(str(tree), "test")
    assert len(split) == 12 and sorted(set(split.targets.tolist())) == [0, 1, 2]
    assert all(f"/{CLASSES[t]}/" in path for path, t in zip(split.paths, split.targets))


def test_size_and_normalisation_come_from_the_keys(tree, tmp_path):
    from dataset import data_spec
    from helper.config import load_config
    cfg = load_config(config(tmp_path, tree, model="resnet8", imagefolder_size=48, imagefolder_std=[0.25] * 3),
                      ["imagefolder_mean", "0.5,0.5,0.5"], "teacher")
    spec = data_spec(cfg)
    assert (spec.num_classes, spec.image_size, spec.mean, spec.std) == (3, 48, (0.5,) * 3, (0.25,) * 3)
    image = spec.test_transform()(Image.new("RGB", (70, 50), (128, 128, 128)))
    assert tuple(image.shape) == (3, 48, 48)
    assert image[0, 0, 0].item() == pytest.approx((128 / 255 - 0.5) / 0.25, abs=1e-6)


def broken(tmp_path, how):
    root = write_tree(tmp_path / "tree", train=3, val=2)
    if how == "missing class":
        for f in (root / "val" / "wren").iterdir():
            f.unlink()
        (root / "val" / "wren").rmdir()
    elif how == "empty class":
        for f in (root / "train" / "cardinal").iterdir():
            f.unlink()
    elif how == "unreadable":
        (root / "train" / "wren" / "wren_1.jpg").write_bytes(b"not a jpeg at all")
    elif how == "no val":
        import shutil
        shutil.rmtree(root / "val")
    return root


@pytest.mark.parametrize("how, says", [
    ("missing class", "class 'wren' of train/ is missing from val/"),
    ("empty class", "an empty class"),
    ("unreadable", "cannot read image"),
    ("no val", "not found"),
])
def test_a_broken_tree_is_one_line_before_any_run_folder(tmp_path, how, says):
    root = broken(tmp_path, how)
    folder = tmp_path / "run"
    code, out, err = run_script("train_teacher.py", config(tmp_path, root, model="resnet8", save_folder=str(folder)))
    assert code != 0 and says in err and len(err.strip().splitlines()) == 1, out + err
    assert not folder.exists()


def test_two_trees_get_two_derived_run_folders(tree, tmp_path):
    from helper.config import load_config
    from helper.run import run_path
    other = write_tree(tmp_path / "cars")
    paths = {run_path(load_config(config(tmp_path, root, model="resnet8", save_folder=""), [], "teacher"), "teacher")
             for root in (tree, other)}
    assert paths == {"save/teacher_model/resnet8_imagefolder_birds", "save/teacher_model/resnet8_imagefolder_cars"}
