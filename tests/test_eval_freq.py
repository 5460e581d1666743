"""eval_freq: the test set is evaluated every eval_freq epochs and after the last; the best
checkpoint comes only from evaluated epochs; the trained weights are those of eval_freq 1."""
from helper.checkpoint import load_checkpoint
from helper.grid import read_log
from runs import assert_same_weights, run_script, tiny_config, weights


def test_eval_every_second_epoch(write_cfg, synthetic_dir, tmp_path):
    folders = {}
    for every in (1, 2):
        folders[every] = tmp_path / f"every_{every}"
        cfg = tiny_config(synthetic_dir, str(folders[every]), epochs=3, batch_size=100, eval_freq=every)
        code, out, err = run_script("train_teacher.py", write_cfg(cfg))
        assert code == 0, err
    lines = [line for line in (folders[2] / "log.txt").read_text().splitlines() if line.startswith("epoch ")]
    assert [("test_acc " in line) for line in lines] == [False, True, True]
    assert "best_acc 0 " in lines[0]
    assert sorted(read_log(str(folders[2]))) == [2, 3] and sorted(read_log(str(folders[1]))) == [1, 2, 3]
    best = load_checkpoint(str(folders[2] / "resnet8_best.pth"))
    assert best["epoch"] in (2, 3) and best["best_acc"] == max(f["test_acc"] for f in read_log(str(folders[2])).values())
    assert load_checkpoint(str(folders[2] / "ckpt_epoch_1.pth"))["accuracy"] is None   # save_freq 1: not evaluated
    assert_same_weights(weights(str(folders[1] / "resnet8_last.pth")), weights(str(folders[2] / "resnet8_last.pth")))


def test_eval_freq_must_be_positive(write_cfg, synthetic_dir, tmp_path):
    code, out, err = run_script("train_teacher.py", write_cfg(tiny_config(synthetic_dir, str(tmp_path / "r"),
                                                                          eval_freq=0)))
    assert code == 2 and "'eval_freq' must be positive, got 0" in err + out
