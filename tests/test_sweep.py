"""sweep.py: the grid, skipping finished runs, resuming unfinished ones, the local GPU pool, the
submitit path (its debug executor) and failure reports, on real tiny runs of synthetic data."""
import os
import subprocess

import pytest
import torch

import report
import sweep
from submitit.core.utils import FailedJobError
from helper.checkpoint import load_checkpoint, save_atomic
from helper.grid import read_config, run_state
from models import model_dict
from runs import call_cli

PAIR = "res110_res20"   # the cheapest pair of the tables on a CPU
TINY = ["dataset", "synthetic", "synthetic_train_size", "64", "synthetic_test_size", "32", "epochs", "1",
        "lr_decay_epochs", "1", "batch_size", "16", "num_workers", "0", "device", "cpu", "tensorboard", "False",
        "print_freq", "1000"]


def call(argv):
    return call_cli(sweep, argv)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Teacher file, data folder and the --set list of tiny runs; one thread per training process."""
    root = tmp_path_factory.mktemp("sweep")
    teachers = root / "teachers"
    teachers.mkdir()
    torch.manual_seed(0)
    torch.save({"model": model_dict["resnet110"](num_classes=100).state_dict()},
               teachers / "resnet110_vanilla.pth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MKL_NUM_THREADS", "1")
        yield {"root": root, "teachers": str(teachers),
               "set": ["--set", *TINY, "data_dir", str(root / "data")]}


@pytest.fixture(scope="module")
def swept(tiny):
    """One local sweep: ours (ASKD) + vanilla on one pair, two seeds (four runs, two at a time);
    KD goes through the submitit test below (processes are what costs time here)."""
    save_root = str(tiny["root"] / "runs")
    argv = ["--table", "similar", "--pairs", PAIR, "--methods", "ours", "vanilla", "--seeds", "2",
            "--executor", "local", "--jobs", "2", "--save_root", save_root,
            "--teacher_dir", tiny["teachers"], *tiny["set"]]
    code, out = call(argv)
    return {"argv": argv, "code": code, "out": out, "save_root": save_root}


NAMES = [f"similar/{m}/{c}/seed_{s}" for m, c in (("ours", PAIR), ("vanilla", "resnet20"))
         for s in (0, 1)]


def test_local_sweep_runs_the_grid(swept, tiny):
    assert swept["code"] == 0, swept["out"]
    assert "sweep: 4 run(s): 4 launched (0 resumed), 0 skipped (finished), 0 failed" in swept["out"]
    for name in NAMES:
        folder = os.path.join(swept["save_root"], name)
        assert run_state(folder, 1)[0] == "finished", name
        config = read_config(folder)
        assert config["seed"] == int(name[-1]) and config["dataset"] == "synthetic"
        assert config["save_folder"] == folder
        if "vanilla" in name:
            assert config["model"] == "resnet20" and config["distill"] == "vanilla"
        else:
            assert config["path_t"] == os.path.join(tiny["teachers"], "resnet110_vanilla.pth")
            assert config["distill"] == {"kd": "kd", "ours": "ASKD"}[name.split("/")[1]]
        assert os.path.isfile(os.path.join(folder, sweep.OUTPUT))


def test_second_invocation_skips_everything(swept):
    code, out = call(swept["argv"])
    assert code == 0, out
    assert "4 run(s): all finished, nothing to launch" in out


def test_unfinished_run_is_resumed(swept):
    folder = os.path.join(swept["save_root"], "similar", "ours", PAIR, "seed_1")
    latest = os.path.join(folder, "latest.pth")
    state = load_checkpoint(latest)
    state["finished"] = False   # as if killed before the end of the run
    save_atomic(state, latest)

    code, out = call(swept["argv"] + ["--dry-run"])
    assert code == 0 and "resume (after epoch 1)" in out and "1 to launch (1 resumed), 3 skipped" in out
    code, out = call(swept["argv"])
    assert code == 0, out
    assert "4 run(s): 1 launched (1 resumed), 3 skipped (finished), 0 failed" in out
    assert "done similar/ours/res110_res20/seed_1" in out
    assert run_state(folder, 1)[0] == "finished"
    with open(os.path.join(folder, "log.txt")) as f:
        assert "resuming after epoch 1" in f.read()


def test_report_of_the_sweep(swept, tmp_path):
    """report.py reads what the sweep wrote: two cells of two runs each."""
    out = tmp_path / "report.md"
    assert report.main([swept["save_root"], "--out", str(out)]) == 0
    text = out.read_text()
    assert "4 finished and averaged, 0 unfinished" in text
    part = text.split("## synthetic: runs outside the paper's tables")[1]   # synthetic data: not the paper's cells
    rows = {line.split("|")[1].strip(): line for line in part.splitlines() if line.startswith("| ")}
    assert "| | resnet110 → resnet20 |" in part and "## Teacher and student of" not in text
    for row in ("ASKD (ours)", "Student (vanilla)"):
        assert rows[row].count("(n=2; 95% CI ") == 1, rows[row]


def test_failed_run_is_reported_with_its_error(tiny, monkeypatch):
    """A run that fails: the summary names it with its last `error:` line; the exit status is 1.
    (The process is faked here; the submitit test below fails a real one.)"""
    def fake_call(command, stdout, **kw):
        stdout.write(b"run folder x on cpu\nerror: checkpoint latest.pth is truncated or corrupt\n")
        return 2

    monkeypatch.setattr(sweep.subprocess, "call", fake_call)
    save_root = tiny["root"] / "broken"
    folder = save_root / "similar" / "vanilla" / "resnet20" / "seed_0"
    folder.mkdir(parents=True)
    (folder / sweep.OUTPUT).write_text("error: an older attempt\n")
    code, out = call(["--table", "similar", "--pairs", PAIR, "--methods", "vanilla", "--seeds", "1",
                      "--save_root", str(save_root), *tiny["set"]])
    assert code == 1, out
    assert "1 launched (0 resumed), 0 skipped (finished), 1 failed" in out
    failed = [line for line in out.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1, out
    assert failed[0].startswith("failed: similar/vanilla/resnet20/seed_0: error: checkpoint latest.pth is truncated")
    assert failed[0].endswith(f"(output: {folder / sweep.OUTPUT})")


def test_slurm_path_through_submitit_debug_executor(tiny, monkeypatch):
    """--executor slurm builds one job array with submitit; its debug backend runs it here: one
    real KD run, and one whose job fails (faked, to spare a process) as submitit reports it."""
    from helper.requeue import RequeuedCommand
    command_function = RequeuedCommand
    real_call = command_function.__call__

    def call_or_fail(self, *args, **kwargs):
        if "seed_1" in self.command[self.command.index("save_folder") + 1]:
            raise FailedJobError("Traceback (most recent call last):\n  ...\n"
                                                     "error: checkpoint latest.pth is corrupt\n")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(command_function, "__call__", call_or_fail)
    save_root = tiny["root"] / "slurm"
    argv = ["--table", "similar", "--pairs", PAIR, "--methods", "kd", "--seeds", "2",
            "--executor", "slurm", "--cluster", "debug", "--partition", "gpu", "--time", "1:00:00",
            "--cpus_per_task", "2", "--save_root", str(save_root), "--teacher_dir", tiny["teachers"], *tiny["set"]]
    code, out = call(argv)
    assert code == 1, out
    assert "submitted 2 run(s) as job array" in out
    assert "done similar/kd/res110_res20/seed_0" in out
    assert "FAILED similar/kd/res110_res20/seed_1" in out
    assert "2 launched (0 resumed), 0 skipped (finished), 1 failed" in out
    assert "failed: similar/kd/res110_res20/seed_1: error: checkpoint latest.pth is corrupt" in out
    folder = str(save_root / "similar" / "kd" / PAIR / "seed_0")
    assert run_state(folder, 1)[0] == "finished"
    assert read_config(folder)["path_t"] == os.path.join(tiny["teachers"], "resnet110_vanilla.pth")


# ----------------------------------------------------------------------------- no training

def test_gpu_pool_gives_each_process_one_gpu(monkeypatch, tmp_path, tiny):
    """--gpus 3,5 with 4 runs: every process sees one GPU, never two processes the same one at once."""
    seen, running = [], set()

    def fake_call(command, env, **kw):
        gpu = env["CUDA_VISIBLE_DEVICES"]
        assert gpu not in running
        running.add(gpu)
        seen.append(gpu)
        import time
        time.sleep(0.05)
        running.discard(gpu)
        return 0

    monkeypatch.setattr(sweep.subprocess, "call", fake_call)
    code, out = call(["--table", "similar", "--pairs", PAIR, "--methods", "vanilla", "kd", "--seeds", "2",
                      "--gpus", "3,5", "--save_root", str(tmp_path), "--teacher_dir", tiny["teachers"],
                      *tiny["set"]])
    assert code == 0, out
    assert sorted(seen) == ["3", "3", "5", "5"] and "2 GPU(s) (3,5), 2 at a time" in out


def test_dry_run_lists_runs_and_launches_nothing(tmp_path):
    code, out = call(["--table", "all", "--methods", "fsp", "vanilla", "--seeds", "1", "--dry-run",
                      "--save_root", str(tmp_path), "--set", "epochs", "2", "lr_decay_epochs", "1"])
    assert code == 0, out
    # fsp: 4 pairs of the similar table; vanilla: 5 + 4 students (MobileNetV2, ShuffleV1 shared by 2 pairs)
    assert "dry run: 13 run(s): 13 to launch (0 resumed), 0 skipped" in out
    assert "note: fsp has no config for wrn-40-2_wrn-40-1, vgg13_mobilenetv2" in out
    assert "different/vanilla/MobileNetV2/seed_0" in out and "train_teacher.py" in out
    assert "warning: teacher checkpoint ./save/teacher_model/cifar100/resnet110_vanilla.pth" in out or \
        os.path.exists("save/teacher_model/cifar100/resnet110_vanilla.pth")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--methods", "kdd"], "unknown method 'kdd' (did you mean 'kd'?)"),
    (["--table", "similar", "--pairs", "res50_vgg8"], "pair 'res50_vgg8' is in the 'different' table"),
    (["--set", "seed", "3"], "--set seed is chosen by the sweep"),
    (["--set", "epochs"], "--set takes KEY VALUE pairs"),
    (["--set", "epochz", "1"], "unknown config key 'epochz'"),
    (["--set", "epochs", "1"], "lr decay epoch 210 is beyond epochs=1"),
    (["--pairs", PAIR, "--methods", "kd", "--teacher_dir", "/nonexistent"], "teacher checkpoint(s) missing"),
    (["--executor", "slurm", "--time", "soon", "--methods", "vanilla", "--pairs", PAIR], None),
])
def test_user_errors_are_one_line(argv, message, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.shutil, "which", lambda name: "/usr/bin/sbatch")
    code, out = call(argv + ["--save_root", str(tmp_path)])
    assert code == 2, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert (message or "--time must be minutes or [D-]HH:MM:SS") in last


def test_slurm_needs_sbatch(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.shutil, "which", lambda name: None)
    code, out = call(["--executor", "slurm", "--methods", "vanilla", "--pairs", PAIR, "--save_root", str(tmp_path)])
    assert code == 2 and "error: sbatch/srun not found" in out


def test_slurm_submission_script(tiny, tmp_path, monkeypatch):
    """The real Slurm backend with a fake sbatch: one array, the options in the #SBATCH lines, no waiting."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\necho 'Submitted batch job 4242'\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    logs = tmp_path / "logs"
    code, out = call(["--table", "similar", "--pairs", PAIR, "--methods", "vanilla", "--seeds", "2",
                      "--executor", "slurm", "--partition", "gpu", "--time", "2:30:00", "--cpus_per_task", "4",
                      "--array_parallelism", "1", "--slurm_log_dir", str(logs), "--save_root", str(tmp_path / "r"),
                      *tiny["set"]])
    assert code == 0, out
    assert "submitted 2 run(s) as job array 4242" in out and "not waiting" in out
    script = (logs / "4242_submission.sh").read_text()
    for line in ("--array=0-1%1", "--partition=gpu", "--time=150", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--job-name=askd-sweep"):
        assert f"#SBATCH {line}\n" in script


def test_timeout_minutes():
    assert [sweep.timeout_minutes(t) for t in ("90", "24:00:00", "1-12:00:00", "30:00", "2-6", "0:30:01")] == \
        [90, 1440, 2160, 30, 3240, 31]


def test_last_error_line():
    assert sweep.last_error_line("run folder x\nerror: bad thing\nTraceback\n") == "error: bad thing"
    assert sweep.last_error_line("Traceback...\n  File x\nRuntimeError: boom\n\n") == "RuntimeError: boom"
    wrapped = ("Job (task=0) failed during processing with trace:\n-----\nsubprocess.CalledProcessError: Command "
               "'[...]' returned non-zero exit status 2.\n\nTraceback (most recent call last):\n  File x\n"
               "submitit.core.utils.FailedJobError: error: checkpoint y is corrupt\n-----\nYou can check full logs")
    assert sweep.last_error_line(wrapped) == "error: checkpoint y is corrupt"
    wrapped = wrapped.replace("error: checkpoint y is corrupt", "Traceback (most recent call last):\n  File z\n"
                              "torch.OutOfMemoryError: CUDA out of memory")
    assert sweep.last_error_line(wrapped) == "torch.OutOfMemoryError: CUDA out of memory"


def test_cli_entry_point():
    out = subprocess.run([sweep.sys.executable, os.path.join(sweep.ROOT, "sweep.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--executor" in out and "--set KEY VALUE" in out


def test_a_diverged_run_is_named_and_not_retried(tmp_path):
    """A run whose log says `diverged:` (helper/trainer.py) is listed, not relaunched; exit 1."""
    argv = ["--table", "similar", "--pairs", PAIR, "--methods", "kd", "--seeds", "1", "--save_root", str(tmp_path),
            "--set", "epochs", "2", "lr_decay_epochs", "1"]
    folder = tmp_path / "similar" / "kd" / PAIR / "seed_0"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("epoch 1 lr 0.05\ndiverged: the evaluation after epoch 2 diverged (test loss nan)\n")
    code, out = call(argv + ["--dry-run"])
    assert code == 0 and "skip (diverged: see its log.txt)" in out, out
    assert "0 to launch (0 resumed), 0 skipped (finished), 1 diverged (not retried)" in out
    code, out = call(argv)
    assert code == 1
    assert "diverged: similar/kd/res110_res20/seed_0: not retried (name a new trial to run it again): " \
           "the evaluation after epoch 2 diverged (test loss nan)" in out
