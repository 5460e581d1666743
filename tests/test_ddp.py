"""DDP on the CPU with gloo: 2 ranks end bit-identical, a 2-rank run equals a 1-process run over
the same global batches, and torchrun itself launches the scripts."""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from helper.checkpoint import load_checkpoint
from runs import ROOT, tiny_config


class Toy(nn.Module):
    """No batch statistics: one process and two ranks compute the same function of a batch."""

    def __init__(self, num_classes=100):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x, is_feat=False, preact=False):
        f0 = F.relu(self.conv(x))
        f1 = F.adaptive_avg_pool2d(f0, 4).flatten(1)
        logits = self.fc(f1)
        return ([f0, f1], logits) if is_feat else logits


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, cfg_path, out_dir, toy, script):
    """One rank: the real training script's main, with rank-local state saved at the end."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if world_size == 1:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(key)
    torch.set_num_threads(1)
    import dataset
    import models
    from helper import trainer
    if toy:
        models.model_dict["toy"] = Toy
        synthetic = dataset.registry.SPECS["synthetic"]                  # augmentation off
        dataset.registry.SPECS["synthetic"] = dataclasses.replace(synthetic, train_transform=synthetic.test_transform)
    fit = trainer.Trainer.fit

    def fit_and_save(self, *args):
        result = fit(self, *args)
        torch.save(self.distiller.state_dict(), os.path.join(out_dir, f"rank{rank}_of{world_size}.pt"))
        return result
    trainer.Trainer.fit = fit_and_save
    import runpy
    sys.argv = [script, "-cfg", cfg_path]
    runpy.run_path(os.path.join(ROOT, script), run_name="__main__")


def launch(world_size, cfg_path, out_dir, toy=False, script="train_teacher.py", timeout=300):
    """The ranks, spawned; a rank that fails fails the test, and ranks still running after `timeout`
    seconds too (the test's fixture then kills them)."""
    ranks = mp.start_processes(_worker, args=(world_size, free_port(), cfg_path, str(out_dir), toy, script),
                               nprocs=world_size, start_method="spawn", join=False)
    deadline = time.time() + timeout
    while not ranks.join(timeout=1):
        assert time.time() < deadline, f"{world_size} ranks still running after {timeout} s"


RECIPE = dict(optimizer="adamw", learning_rate=1e-3, weight_decay=0.05, lr_schedule="cosine", lr_warmup_epochs=1,
              sched_on_updates=True, label_smoothing=0.1, mixup=0.8, cutmix=1.0, transform="timm",
              auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25, clip_grad=1.0, model_ema=True)


@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["crd_protocol", "timm_recipe"])
def test_two_ranks_end_bit_identical(recipe, write_cfg, synthetic_dir, tmp_path):
    cfg = write_cfg(tiny_config(synthetic_dir, str(tmp_path / "run"), model="resnet8", **recipe))
    launch(2, cfg, tmp_path, toy=False)
    a, b = (torch.load(tmp_path / f"rank{r}_of2.pt") for r in range(2))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    last = load_checkpoint(str(tmp_path / "run" / "resnet8_last.pth"))["model"]
    assert torch.equal(last["fc.weight"], a["student.fc.weight"])


def test_crd_memory_stays_identical_across_ranks(write_cfg, synthetic_dir, tmp_path):
    teacher = tmp_path / "resnet14.pth"
    torch.save({"model": __import__("models").model_dict["resnet14"](num_classes=100).state_dict()}, teacher)
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), model_s="resnet8", model_t="resnet14",
                      path_t=str(teacher), distill="crd", beta=0.8, nce_k=64, feat_dim=16)
    cfg.pop("model")
    launch(2, write_cfg(cfg), tmp_path, script="train_student.py")
    a, b = (torch.load(tmp_path / f"rank{r}_of2.pt") for r in range(2))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (a["memory.z"] > 0).all()


def test_two_ranks_match_one_process_over_the_same_global_batches(write_cfg, synthetic_dir, tmp_path):
    states = {}
    for world in (1, 2):
        cfg = write_cfg(tiny_config(synthetic_dir, str(tmp_path / f"run{world}"), model="toy"))
        launch(world, cfg, tmp_path, toy=True)
        states[world] = torch.load(tmp_path / f"rank0_of{world}.pt")
    for key, value in states[1].items():
        torch.testing.assert_close(states[2][key], value, atol=1e-5, rtol=1e-5)
    assert not torch.equal(states[1]["student.fc.weight"], Toy().fc.weight)  # it trained


def test_torchrun_launches_a_run(write_cfg, synthetic_dir, tmp_path):
    cfg = write_cfg(tiny_config(synthetic_dir, str(tmp_path / "run"), epochs=1, lr_decay_epochs="1"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             os.path.join(ROOT, "train_teacher.py"), "-cfg", cfg],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "x 2 processes" in result.stdout
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("\nepoch 1 ") == 1  # rank 0 alone writes
    assert (tmp_path / "run" / "resnet8_last.pth").exists()


def test_batch_must_split_evenly(write_cfg, synthetic_dir, tmp_path):
    from helper import distributed
    from common.errors import UserError
    with pytest.raises(UserError, match="not divisible"):
        distributed.check_batch(63, distributed.Context(0, 2, 0))


def test_torchrun_restarts_the_group_after_each_killed_rank_under_load_and_it_resumes_bit_identical(
        write_cfg, synthetic_dir, tmp_path):
    """Beside two CPU-bound processes, `torchrun --max-restarts 3`: one of the 2 gloo ranks SIGKILLed
    in epoch 2, 3 and 4 of one launch; each restarted group forms (each round under its own prefix
    of torchrun's shared store: helper/distributed.py), resumes from latest.pth, and the run ends
    with the weights of an uninterrupted run, each step within a bounded time."""
    from processes import communicate
    from runs import assert_same_weights, weights
    env = dict(os.environ, OMP_NUM_THREADS="1")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]

    def torchrun(folder, *extra):
        cfg = write_cfg(tiny_config(synthetic_dir, str(folder), epochs=4, lr_decay_epochs="2", batch_size=16))
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 *extra, os.path.join(ROOT, "train_teacher.py"), "-cfg", cfg],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    whole = torchrun(tmp_path / "whole")
    out = communicate(whole, timeout=400)
    assert whole.returncode == 0, out
    folder = tmp_path / "killed"
    run = torchrun(folder, "--max-restarts", "3")
    for epoch in (1, 2, 3):
        deadline = time.time() + 240  # a restart: torchrun notices, tears down, re-forms, the ranks import and resume
        while f"\nepoch {epoch} " not in ((folder / "log.txt").read_text() if (folder / "log.txt").exists() else ""):
            assert run.poll() is None, communicate(run, 1)
            assert time.time() < deadline, f"epoch {epoch} not done within 240 s"
            time.sleep(0.05)
        ranks = ranks_of(run.pid)
        os.kill(ranks[-1], signal.SIGKILL)
    out = communicate(run, timeout=400)
    for process in busy:
        process.kill()
    assert run.returncode == 0, out
    log = (folder / "log.txt").read_text()
    assert [f"resuming after epoch {epoch}" in log for epoch in (1, 2, 3)] == [True] * 3, log
    assert_same_weights(weights(tmp_path / "whole" / "resnet8_last.pth"), weights(folder / "resnet8_last.pth"))


def ranks_of(torchrun_pid, timeout=60):
    """The pids of torchrun's 2 ranks (its children), once both run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children") as f:
            ranks = [int(pid) for pid in f.read().split()]
        if len(ranks) == 2:
            return ranks
        time.sleep(0.05)
    raise AssertionError(f"torchrun's ranks: {ranks}")
