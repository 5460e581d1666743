"""sweep.py --runs-per-gpu K (helper/packing.py): packed runs end with the weights of runs done one
after the other (K CPU processes, local and through submitit's debug backend); the memory
arithmetic, the probe and the refusals with a faked GPU; the MPS daemon's start and stop."""
import contextlib
import io
import json
import os
import threading
import time

import pytest
import torch

import sweep
from helper import packing
from helper.grid import run_state, vanilla_config
from runs import assert_same_weights, call_cli, run_script, weights

PAIR = "res110_res20"
TINY = ["dataset", "synthetic", "synthetic_train_size", "64", "synthetic_test_size", "32", "epochs", "1",
        "lr_decay_epochs", "1", "batch_size", "16", "num_workers", "0", "device", "cpu", "tensorboard", "False",
        "print_freq", "1000", "model", "resnet8"]
VANILLA = ["--table", "similar", "--pairs", PAIR, "--methods", "vanilla"]
GIB = packing.GIB


def call(argv):
    return call_cli(sweep, argv)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Two tiny resnet8 runs (seeds 0, 1), one after the other, in this process (one thread)."""
    root = tmp_path_factory.mktemp("packing")
    data = str(root / "data")
    for seed in (0, 1):
        code, _, err = run_script("train_teacher.py", vanilla_config("resnet20"), *TINY, "data_dir", data,
                                  "seed", seed, "save_folder", root / "alone" / f"seed_{seed}")
        assert code == 0, err
    return {"root": root, "set": ["--set", *TINY, "data_dir", data]}


def assert_same_as_alone(alone, save_root):
    for seed in (0, 1):
        folder = os.path.join(save_root, "similar", "vanilla", "resnet20", f"seed_{seed}")
        assert run_state(folder, 1)[0] == "finished"
        assert_same_weights(weights(os.path.join(folder, "resnet8_last.pth")),
                            weights(str(alone["root"] / "alone" / f"seed_{seed}" / "resnet8_last.pth")))


def test_two_cpu_processes_give_the_weights_of_runs_alone(alone, monkeypatch):
    monkeypatch.setattr(packing, "available_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)   # the sweep divides the 2 cores: 1 thread each
    save_root = str(alone["root"] / "packed")
    code, out = call([*VANILLA, "--seeds", "2", "--runs-per-gpu", "2", "--save_root", save_root, *alone["set"]])
    assert code == 0, out
    assert "launching 2 run(s) on the CPU (1 thread(s) each), 2 at a time" in out
    assert_same_as_alone(alone, save_root)


def test_slurm_task_runs_k_runs(tmp_path, monkeypatch):
    """--executor slurm with K=2: one array task runs `sweep.py --group FILE` (here in this process,
    its training processes faked), which runs both runs at once; one of them fails."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(sweep, "prepare_data", lambda runs: None)
    monkeypatch.setattr(packing, "available_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    running = []

    def fake_call(command, stdout, env, **kw):
        running.append(env["OMP_NUM_THREADS"])
        folder = command[command.index("save_folder") + 1]
        if folder.endswith("seed_1"):
            stdout.write(b"error: boom\n")
            return 2
        torch.save({"finished": True, "epoch": 1}, os.path.join(folder, "latest.pth"))
        return 0

    def task(self):
        assert self.command[2:4] == ["--group", self.command[3]] and self.command[-2:] == ["--runs-per-gpu", "2"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = sweep.main(self.command[2:])
        if code:
            raise submitit.core.utils.FailedJobError(err.getvalue())

    monkeypatch.setattr(sweep.subprocess, "call", fake_call)
    from helper.requeue import RequeuedCommand
    monkeypatch.setattr(RequeuedCommand, "__call__", task)
    save_root = tmp_path / "slurm"
    code, out = call([*VANILLA, "--seeds", "2", "--runs-per-gpu", "2", "--executor", "slurm", "--cluster", "debug",
                      "--save_root", str(save_root), "--set", "epochs", "1", "lr_decay_epochs", "1"])
    assert code == 1, out
    assert "submitted 2 run(s) in 1 task(s) of up to 2 as job array" in out
    assert "launching 2 run(s) on the CPU (1 thread(s) each), 2 at a time" in out and running == ["1", "1"]
    assert "done similar/vanilla/resnet20/seed_0" in out
    assert "failed: similar/vanilla/resnet20/seed_1: error: boom" in out
    group = json.loads((save_root / "slurm_logs" / "groups" / "group_0.json").read_text())
    assert [g["name"] for g in group] == [f"similar/vanilla/resnet20/seed_{s}" for s in (0, 1)]


# ----------------------------------------------------------------------------- no training

def test_memory_arithmetic():
    context = packing.CUDA_CONTEXT
    assert packing.check_fit(4, GIB, 4 * (GIB + context)) == 4 * (GIB + context)
    with pytest.raises(packing.UserError) as refused:
        packing.check_fit(8, 3 * GIB, 20 * GIB, "GPU 1")
    assert str(refused.value) == ("--runs-per-gpu 8: 8 runs need about 28.0 GiB (3.00 GiB measured peak + 0.5 GiB "
                                  "CUDA context each) but GPU 1 has 20.0 GiB free: set --runs-per-gpu 5")
    assert packing.cpu_threads(2, cores=16) == 8 and packing.cpu_threads(3, cores=4) == 1
    with pytest.raises(packing.UserError, match="more than its 4 cores: set --runs-per-gpu 4 or less"):
        packing.cpu_threads(5, cores=4)


def write_peak(folder, reserved):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, packing.PEAK_MEMORY), "w") as f:
        json.dump({"max_memory_reserved": reserved, "max_memory_allocated": reserved // 2}, f)


def test_recorded_peak_is_the_largest(tmp_path):
    write_peak(tmp_path / "a", GIB)
    write_peak(tmp_path / "b", 3 * GIB)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / packing.PEAK_MEMORY).write_text("{broken")
    assert packing.recorded_peak([str(tmp_path / n) for n in "abcd"]) == (3 * GIB, str(tmp_path / "b"))
    assert packing.recorded_peak([str(tmp_path / "d")]) == (None, None)


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """One GPU '0' with 4 GiB free, no MPS binary; training processes faked (they record the
    concurrency and, for the probe, write a peak of 1 GiB)."""
    monkeypatch.setattr(sweep, "visible_gpus", lambda spec=None: ["0"])
    monkeypatch.setattr(packing, "free_memory", lambda gpus: {g: 4 * GIB for g in gpus})
    monkeypatch.setattr(packing.shutil, "which", lambda name: None)
    seen = {"running": 0, "most": 0, "envs": [], "commands": []}
    lock = threading.Lock()

    def fake_call(command, env, **kw):
        with lock:
            seen["running"] += 1
            seen["most"] = max(seen["most"], seen["running"])
            seen["envs"].append(env)
            seen["commands"].append(command)
        folders = [command[i + 1] for i, a in enumerate(command) if a == "save_folder"]
        if "init_epochs" in command:   # the probe: one epoch in its scratch folder
            write_peak(folders[-1], GIB)
        time.sleep(0.1)
        with lock:
            seen["running"] -= 1
        return 0

    monkeypatch.setattr(sweep.subprocess, "call", fake_call)
    return seen


ARGS = [*VANILLA, "kd", "--seeds", "2", "--set", "epochs", "1", "lr_decay_epochs", "1", "--teacher_dir", "."]


def test_probe_then_two_runs_per_gpu(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "prepare_data", lambda runs: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet110_vanilla.pth").write_bytes(b"")
    code, out = call([*ARGS, "--runs-per-gpu", "2", "--save_root", str(tmp_path / "r")])
    assert code == 0, out
    assert "measuring one run's peak memory: similar/kd/res110_res20/seed_0, one epoch alone on GPU 0" in out
    assert "packing: 2 runs per GPU, each up to 1.00 GiB (one epoch of similar/kd/res110_res20/seed_0)" in out
    assert "runs time-slice the GPU without MPS" in out and "launching 4 run(s) on 1 GPU(s) (0), 2 at a time" in out
    assert fake_gpu["most"] == 2 and len(fake_gpu["envs"]) == 5
    assert {env["CUDA_VISIBLE_DEVICES"] for env in fake_gpu["envs"]} == {"0"}
    assert not (tmp_path / "r" / ".probe" / "similar" / "kd" / PAIR / "seed_0").exists()


def test_k_that_does_not_fit_is_refused_in_one_line(fake_gpu, tmp_path, monkeypatch):
    """A peak recorded by an earlier run is used without a probe; 4 x 1.5 GiB > 4 GiB free."""
    monkeypatch.setattr(sweep, "prepare_data", lambda runs: None)
    write_peak(tmp_path / "r" / "similar" / "vanilla" / "resnet20" / "seed_1", GIB)
    code, out = call([*VANILLA, "--seeds", "2", "--set", "epochs", "1", "lr_decay_epochs", "1",
                      "--runs-per-gpu", "4", "--save_root", str(tmp_path / "r")])
    assert code == 2, out
    assert out.strip() == ("error: --runs-per-gpu 4: 4 runs need about 6.0 GiB (1.00 GiB measured peak + 0.5 GiB "
                           "CUDA context each) but GPU 0 has 4.0 GiB free: set --runs-per-gpu 2")
    assert fake_gpu["commands"] == []


@pytest.mark.parametrize("argv, message", [
    (["--runs-per-gpu", "0"], "--runs-per-gpu must be at least 1, got 0"),
    (["--runs-per-gpu", "2", "--jobs", "2"],
     "give --jobs or --runs-per-gpu, not both: --runs-per-gpu K runs K per GPU at once"),
])
def test_packing_arguments_refused(argv, message, tmp_path):
    code, out = call([*VANILLA, *argv, "--save_root", str(tmp_path)])
    assert code == 2 and out.strip() == f"error: {message}"


def test_cpu_k_above_the_cores_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "visible_gpus", lambda spec=None: [])
    monkeypatch.setattr(sweep, "prepare_data", lambda runs: None)
    monkeypatch.setattr(packing, "available_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    code, out = call([*VANILLA, "--seeds", "1", "--set", "epochs", "1", "lr_decay_epochs", "1",
                      "--runs-per-gpu", "3", "--save_root", str(tmp_path)])
    assert code == 2 and "more than its 2 cores: set --runs-per-gpu 2 or less" in out


def test_mps_daemon_started_and_quit(tmp_path, monkeypatch):
    """A fake nvidia-cuda-mps-control logs how it is called: -d with the sweep's own pipe folder,
    then `quit` on its stdin; a running daemon of the user's is left alone."""
    log = tmp_path / "calls.txt"
    control = tmp_path / "bin" / packing.MPS_CONTROL
    control.parent.mkdir()
    control.write_text(f"#!/bin/sh\necho \"$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$(cat)\" >> {log}\n")
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{control.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "none"))
    with packing.MPS(str(tmp_path / "mps")) as mps:
        assert mps.started and mps.env["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "mps" / "pipe")
    assert log.read_text().splitlines() == [f"-d pipe={tmp_path / 'mps' / 'pipe'} stdin=",
                                            f" pipe={tmp_path / 'mps' / 'pipe'} stdin=quit"]
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "control").write_text("")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "user"))
    with packing.MPS(str(tmp_path / "mps2")) as mps:
        assert not mps.started and mps.env == {} and "using the running MPS daemon" in mps.note


def test_benchmark_packing_projection():
    """bench/benchmark.py --packing: the paper's runs counted from configs/, the projected hours."""
    import argparse
    import sys
    sys.path.insert(0, os.path.join(sweep.ROOT, "bench"))
    import benchmark
    assert benchmark.paper_runs() == (92, 9, 5)   # 44 + 48 method cells; 9 students, 5 teachers
    args = argparse.Namespace(load_before="0/0/0", load_after="0/0/0", batch_size=64, warmup=10, steps=300,
                              mps_note="MPS: started")
    rows = [(1, 10000.0, [10000.0], 500.0), (2, 15000.0, [7600.0, 7400.0], 510.0)]
    text = benchmark.packing_section(benchmark.torch.device("cpu"), args, "python bench/benchmark.py", rows)
    assert "106 runs x 3 = 318 runs" in text
    assert "| 1 | 10,000.0 | 1.00x | 10,000.0 | 500 | 106.0 h | 13.2 h |" in text   # 318 x 240 x 50000 / 1e4 s
    assert "| 2 | 15,000.0 | 1.50x | 7,500.0 | 510 | 70.7 h | 8.8 h |" in text
