"""Model selection without the test set (`val_split F`): a seeded, class-stratified share of the
training set is held out, the best checkpoint follows it, and the log and the report give the
test top-1 at the chosen epoch."""
import numpy as np
import pytest
import torch

import dataset
from dataset.device_loader import build_fast_loaders
from helper.checkpoint import load_checkpoint
from helper.grid import parse_log, top1
from runs import make_cfg, run_script, tiny_config


def test_the_held_out_share_is_stratified_seeded_and_leaves_every_class_training():
    targets = np.repeat(np.arange(10), [50, 50, 50, 50, 50, 20, 20, 20, 3, 2])
    held = dataset.held_out(targets, 0.1, seed=0)
    counts = np.bincount(targets[held], minlength=10)
    assert counts.tolist() == [5, 5, 5, 5, 5, 2, 2, 2, 1, 1]
    assert np.array_equal(held, dataset.held_out(targets, 0.1, seed=0))
    assert not np.array_equal(held, dataset.held_out(targets, 0.1, seed=1))
    assert len(np.unique(held)) == len(held)


@pytest.mark.parametrize("fast", [False, True])
def test_the_split_is_disjoint_from_training_and_the_same_on_every_rank(synthetic_dir, fast):
    cfg = make_cfg("kd", dataset="synthetic", data_dir=synthetic_dir, synthetic_train_size=600, val_split=0.2,
                   batch_size=10, fast=fast)
    images, targets = dataset.read_split(synthetic_dir, "train")
    train, val = dataset.training_parts(cfg)
    assert len(train) + len(val) == 600 and len(val) == 100  # 6 images a class: one of each held out
    rows = {tuple(image.reshape(-1)[:64]) for image in images}
    assert len(rows) == 600  # each image told by its first pixels
    seen = [{tuple(image.reshape(-1)[:64]) for image in part.array()} for part in (train, val)]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 600
    if fast:
        ranks = [build_fast_loaders(cfg, "cpu", rank=r, world_size=2, val=True) for r in range(2)]
        held = [loaders[2].images for loaders in ranks]
        assert torch.equal(held[0], held[1]) and len(held[0]) == 100
        assert all(len(loaders[0].images) == 500 for loaders in ranks)


def test_val_split_is_refused_out_of_range(write_cfg, synthetic_dir, tmp_path):
    for bad in ("1", "-0.1", "1.5"):
        code, out, err = run_script("train_teacher.py", write_cfg(tiny_config(synthetic_dir, str(tmp_path / "r"))),
                                    "val_split", bad)
        assert code != 0 and "'val_split'" in err and len(err.strip().splitlines()) == 1


def scripted_scores(monkeypatch, val, test):
    """helper.trainer.evaluate gives these top-1 figures, epoch by epoch, to the val and test loaders."""
    import helper.trainer as trainer
    real = trainer.evaluate
    figures = {"val": iter(val), "test": iter(test)}

    def evaluate(model, loader, device):
        score = real(model, loader, device)
        which = "test" if len(loader.dataset) == 200 else "val"  # tiny_config's 200 test images
        return {**score, "top1": next(figures[which])}
    monkeypatch.setattr(trainer, "evaluate", evaluate)


def test_the_best_checkpoint_follows_val_not_test(write_cfg, synthetic_dir, tmp_path, monkeypatch):
    scripted_scores(monkeypatch, val=[10.0, 30.0, 20.0], test=[50.0, 10.0, 60.0])
    folder = tmp_path / "run"
    cfg = write_cfg(tiny_config(synthetic_dir, str(folder), epochs=3, val_split=0.1))
    code, out, err = run_script("train_teacher.py", cfg)
    assert code == 0, out + err
    assert load_checkpoint(str(folder / "resnet8_best.pth"))["epoch"] == 2
    assert "best val top-1 30.00 at epoch 2, test top-1 there 10.00; last epoch test top-1 60.00" in out
    log = parse_log((folder / "log.txt").read_text())
    assert [log[e]["val_acc"] for e in (1, 2, 3)] == [10.0, 30.0, 20.0]
    assert top1(log, "val", 3) == 10.0 and top1(log, "best", 3) == 60.0 and top1(log, "last", 3) == 60.0
    assert log[3]["test_at_best_val"] == 10.0 and "best_acc" not in log[3]


def test_a_resumed_run_with_a_split_ends_as_the_run_done_at_once(write_cfg, synthetic_dir, tmp_path):
    ends = []
    for name, stops in (("whole", [3]), ("split", [1, 3])):
        folder = tmp_path / name
        for epochs in stops:
            cfg = write_cfg(tiny_config(synthetic_dir, str(folder), epochs=epochs, lr_decay_epochs="1",
                                        val_split=0.1, fast=True, batch_size=32))
            code, out, err = run_script("train_teacher.py", cfg)
            assert code == 0, out + err
        ends.append((load_checkpoint(str(folder / "latest.pth")), (folder / "log.txt").read_text()))
    (whole, whole_log), (split, split_log) = ends
    for key, value in whole["distiller"].items():
        assert torch.equal(value, split["distiller"][key]), key
    assert (whole["best_epoch"], whole["test_at_best"]) == (split["best_epoch"], split["test_at_best"])
    lines = [[line.split(" seconds")[0] for line in log.splitlines() if line.startswith("epoch ")]
             for log in (whole_log, split_log)]
    assert lines[0] == lines[1] and "val_acc" in lines[0][-1]


def test_two_ranks_hold_out_the_same_images_and_end_equal(write_cfg, synthetic_dir, tmp_path):
    from test_ddp import launch
    cfg = write_cfg(tiny_config(synthetic_dir, str(tmp_path / "run"), model="resnet8", val_split=0.1))
    launch(2, cfg, tmp_path)
    a, b = (torch.load(tmp_path / f"rank{r}_of2.pt") for r in range(2))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = parse_log((tmp_path / "run" / "log.txt").read_text())
    assert all("val_acc" in fields for fields in log.values())


def test_a_run_whose_val_top1_stays_0_chooses_its_first_epoch(write_cfg, synthetic_dir, tmp_path, monkeypatch):
    scripted_scores(monkeypatch, val=[0.0, 0.0], test=[3.0, 4.0])
    folder = tmp_path / "run"
    code, out, err = run_script("train_teacher.py", write_cfg(tiny_config(synthetic_dir, str(folder), val_split=0.1)))
    assert code == 0, out + err
    assert load_checkpoint(str(folder / "resnet8_best.pth"))["epoch"] == 1
    assert "best val top-1 0.00 at epoch 1, test top-1 there 3.00; last epoch test top-1 4.00" in out
