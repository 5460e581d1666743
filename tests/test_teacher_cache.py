"""The teacher cache (helper/teacher_cache.py): a cached run is the uncached run; a cache that is
stale, partial or killed mid-build is rebuilt, never used; what it cannot serve is refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from dataset.device_loader import DeviceLoader
from helper import teacher_cache
from helper.battery import calibrated
from helper.checkpoint import load_checkpoint
from models import model_dict
from runs import ROOT, run_script

pytestmark = pytest.mark.xdist_group("teacher_cache")  # one process builds the shared cache once
TRAIN, TEST = 64, 32


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """Synthetic data, a calibrated resnet8 teacher file and a cache folder, shared by the module."""
    from dataset.synthetic import write_synthetic_cifar100
    root = tmp_path_factory.mktemp("teacher_cache")
    write_synthetic_cifar100(str(root / "data"), TRAIN, TEST, seed=0)
    torch.manual_seed(0)
    torch.save({"model": calibrated(model_dict["resnet8"](num_classes=100)).state_dict()}, root / "teacher.pth")
    return root


def config(space, name, distill, **extra):
    cfg = dict(dataset="synthetic", data_dir=str(space / "data"), synthetic_train_size=TRAIN,
               synthetic_test_size=TEST, model_s="resnet8", model_t="resnet8", path_t=str(space / "teacher.pth"),
               distill=distill, gamma=1.0, alpha=1.0, beta=1.0, epochs=3, lr_decay_epochs="2",
               learning_rate=0.05, batch_size=16, num_workers=0, device="cpu", tensorboard=False, fast=True,
               save_folder=str(space / name), teacher_cache=str(space / "cache"))
    cfg.update(extra)
    path = space / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train(space, name, distill, **extra):
    code, out, err = run_script("train_student.py", config(space, name, distill, **extra))
    assert code == 0, out + err
    return out


def epoch_lines(out):
    return [line.split(" seconds")[0] for line in out.splitlines() if line.startswith("epoch ") and " lr " in line]


def cache_folders(space):
    return sorted(p for p in (space / "cache").iterdir() if p.is_dir()) if (space / "cache").exists() else []


# CRD first: it builds the logits and the embedding, which the logit methods then reuse
@pytest.mark.parametrize("distill", ["crd", "kd", "dkd", "dist"])
def test_a_cached_run_equals_the_uncached_run(space, distill):
    extra = {"nce_k": 16, "feat_dim": 16} if distill == "crd" else {}
    plain = train(space, f"{distill}_plain", distill, teacher_cache="off", **extra)
    cached = train(space, f"{distill}_cached", distill, **extra)
    assert "teacher cache" not in plain and "teacher cache" in cached
    assert "logits" in cached and ("embedding" in cached) == (distill == "crd")
    assert epoch_lines(cached) == epoch_lines(plain) and len(epoch_lines(plain)) == 3
    a = load_checkpoint(str(space / f"{distill}_plain" / "latest.pth"))["distiller"]
    b = load_checkpoint(str(space / f"{distill}_cached" / "latest.pth"))["distiller"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_cache_is_built_once_and_reused(space):
    train(space, "first", "kd")
    out = train(space, "again", "kd")
    assert "teacher cache: building" not in out and "memory-mapped" in out
    folder = cache_folders(space)[0]
    meta = json.loads((folder / "key.json").read_text())
    assert meta["outputs"]["logits"]["shape"] == [TRAIN, 162, 100]
    assert os.path.getsize(folder / "logits.npy") == meta["outputs"]["logits"]["bytes"] > TRAIN * 162 * 100 * 4


def loader_batch(space, index, view, amp="off"):
    """The fast path's batch of these images at these views, and the teacher's outputs on it."""
    from dataset import read_split
    images, targets = read_split(str(space / "data"), "train")
    loader = DeviceLoader(images, targets, len(index), "cpu")
    from dataset.device_loader import view_augmentation
    image, _, _ = loader._batch(torch.as_tensor(index), view_augmentation(torch.as_tensor(view)))
    teacher = model_dict["resnet8"](num_classes=100)
    teacher.load_state_dict(torch.load(space / "teacher.pth")["model"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp != "off"):
        return loader, teacher.eval(), teacher(image, is_feat=True)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_the_cache_gives_the_teachers_outputs_of_each_view(space, amp):
    from helper.config import get_cfg_defaults
    from distillers import CRD
    g = torch.Generator().manual_seed(3)
    index, view = torch.randint(0, TRAIN, (24,), generator=g), torch.randint(0, 162, (24,), generator=g)
    loader, teacher, (feats, logits) = loader_batch(space, index, view, amp)
    cfg = get_cfg_defaults("crd")
    cfg.merge_from_list(["model_t", "resnet8", "path_t", str(space / "teacher.pth"), "teacher_cache",
                         str(space / "cache_unit"), "fast", True, "amp", amp])
    from dataset import spec
    cache = teacher_cache.open_cache(cfg, CRD, teacher, loader, spec("synthetic"), torch.device("cpu"), print)
    cached_feats, cached_logits = cache(index, view)
    assert cached_logits.dtype == logits.dtype == (torch.bfloat16 if amp == "bf16" else torch.float32)
    torch.testing.assert_close(cached_logits, logits, rtol=0, atol=1e-5 if amp == "off" else 0.05)
    torch.testing.assert_close(cached_feats[-1], feats[-1], rtol=0, atol=1e-5 if amp == "off" else 0.05)


def test_a_changed_teacher_file_gets_a_new_cache(space, tmp_path):
    import shutil
    shutil.copytree(space / "data", tmp_path / "data")
    torch.manual_seed(1)
    torch.save({"model": calibrated(model_dict["resnet8"](num_classes=100)).state_dict()}, tmp_path / "teacher.pth")
    first = train(tmp_path, "one", "kd")
    torch.manual_seed(2)
    torch.save({"model": calibrated(model_dict["resnet8"](num_classes=100)).state_dict()}, tmp_path / "teacher.pth")
    second = train(tmp_path, "two", "kd")
    plain = train(tmp_path, "three", "kd", teacher_cache="off")
    assert "teacher cache: building" in first and "teacher cache: building" in second
    folders = cache_folders(tmp_path)
    assert len(folders) == 2
    shas = {json.loads((f / "key.json").read_text())["key"]["teacher"]["sha256"] for f in folders}
    assert len(shas) == 2
    assert epoch_lines(second) == epoch_lines(plain) != epoch_lines(first)


def test_a_partial_or_foreign_cache_is_rebuilt(space, tmp_path):
    import shutil
    shutil.copytree(space / "data", tmp_path / "data")
    shutil.copy(space / "teacher.pth", tmp_path / "teacher.pth")
    reference = train(tmp_path, "one", "kd")
    folder = cache_folders(tmp_path)[0]
    logits = folder / "logits.npy"
    with open(logits, "r+b") as f:  # a file cut short
        f.truncate(os.path.getsize(logits) // 2)
    out = train(tmp_path, "two", "kd")
    assert "teacher cache: building" in out and epoch_lines(out) == epoch_lines(reference)
    meta = json.loads((folder / "key.json").read_text())
    meta["key"]["teacher"]["sha256"] = "0" * 64  # a key.json of another teacher
    (folder / "key.json").write_text(json.dumps(meta))
    out = train(tmp_path, "three", "kd")
    assert "teacher cache: building" in out and epoch_lines(out) == epoch_lines(reference)


KILLED_BUILD = """
import sys, time, torch
sys.path.insert(0, {root!r})
from helper import session
from models.resnet import ResNet
forward = ResNet.forward
def slow(self, *args, **kwargs):  # a build slow enough to be killed in its middle
    time.sleep(0.5)
    return forward(self, *args, **kwargs)
ResNet.forward = slow
session.distil({cfg!r})
"""


def test_a_killed_build_leaves_no_cache_that_is_used(space, tmp_path):
    import shutil
    shutil.copytree(space / "data", tmp_path / "data")
    shutil.copy(space / "teacher.pth", tmp_path / "teacher.pth")
    cfg = config(tmp_path, "killed", "kd")
    process = subprocess.Popen([sys.executable, "-c", KILLED_BUILD.format(root=ROOT, cfg=cfg)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline and not any(p.name.endswith(".tmp") for f in cache_folders(tmp_path)
                                             for p in f.iterdir()):
        time.sleep(0.1)
    time.sleep(1.0)  # some rows written
    assert process.poll() is None, "the build ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    folder = cache_folders(tmp_path)[0]
    assert any(p.name.endswith(".tmp") for p in folder.iterdir()) and not (folder / "logits.npy").exists()
    key = json.loads((folder / "key.json").read_text())["key"] if (folder / "key.json").exists() else None
    assert key is None or teacher_cache.missing_outputs(str(folder), key, ["logits"]) == ["logits"]
    out = train(tmp_path, "after", "kd")
    plain = train(tmp_path, "plain", "kd", teacher_cache="off")
    assert "teacher cache: building" in out and epoch_lines(out) == epoch_lines(plain)
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())


@pytest.mark.parametrize("distill, extra, says", [
    ("mlkd", {"fast": False}, "strongly augmented view"),
    ("ofd", {}, "train mode"),
    ("at", {}, "reads the teacher's features"),
    ("kd", {"fast": False}, "teacher_cache needs fast true"),
    ("kd", {"dataset": "imagenet"}, "no finite set of views"),
])
def test_what_the_cache_cannot_serve_is_refused_in_one_line(space, distill, extra, says):
    name = f"refused_{distill}_{len(extra)}"
    code, out, err = run_script("train_student.py", config(space, name, distill, **extra))
    assert code != 0 and says in err and len(err.strip().splitlines()) == 1, out + err
    assert not (space / name).exists()


def test_two_runs_started_together_build_the_cache_once(space, tmp_path):
    import shutil
    shutil.copytree(space / "data", tmp_path / "data")
    shutil.copy(space / "teacher.pth", tmp_path / "teacher.pth")
    processes = [subprocess.Popen([sys.executable, os.path.join(ROOT, "train_student.py"), "-cfg",
                                   config(tmp_path, f"run{i}", "kd")], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outs
    assert sum("teacher cache: building" in out for out in outs) == 1, outs
    assert epoch_lines(outs[0]) == epoch_lines(outs[1])
    assert len(cache_folders(tmp_path)) == 1
