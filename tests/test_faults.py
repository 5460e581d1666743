"""Faults a cluster meets, end to end: a diverging run never ends as a success (training or
evaluation), is marked diverged in its log, by report.py and by sweep.py, and evaluate.py refuses
a diverged checkpoint."""
import os

import pytest
import torch

import evaluate
import report
from models import model_dict
from runs import ROOT, call_cli, run_script, tiny_config

NAN_IN_EVAL = '''
import torch
from models import resnet8


def model(num_classes=100):
    """resnet8 whose first BN has a negative running variance: finite in training (batch
    statistics), NaN in evaluation (the running ones)."""
    net = resnet8(num_classes=num_classes)
    net.bn1.running_var.fill_(-1e6)
    return net
'''


def student_cfg(data, folder, teacher, **extra):
    cfg = tiny_config(data, str(folder), **{**dict(model_s="resnet8", model_t="resnet14", path_t=teacher,
                                                   synthetic_train_size=320, synthetic_test_size=32, batch_size=32),
                                            **extra})
    cfg.pop("model")
    return cfg


@pytest.fixture(scope="module")
def huge_teacher(tmp_path_factory):
    """A resnet14 whose BN scales are tripled: its features grow so fast that CC diverges in a few steps."""
    torch.manual_seed(0)
    teacher = model_dict["resnet14"](num_classes=100)
    with torch.no_grad():
        for module in teacher.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.mul_(3.0)
    path = tmp_path_factory.mktemp("huge") / "resnet14.pth"
    torch.save({"model": teacher.state_dict()}, path)
    return str(path)


def test_a_diverging_cc_run_stops_non_zero_and_is_reported_diverged(huge_teacher, tmp_path, write_cfg):
    folder = tmp_path / "runs" / "cc"
    cfg = student_cfg(str(tmp_path / "data"), folder, huge_teacher, distill="cc", beta=0.02, epochs=2)
    code, out, err = run_script("train_student.py", write_cfg(cfg))
    assert code == 2 and "became non-finite" in err, out + err
    assert (folder / "log.txt").read_text().splitlines()[-1].startswith("diverged: loss term")
    assert not (folder / "resnet8_last.pth").exists()
    code, text = call_cli(report, [str(tmp_path / "runs")])
    assert code == 0, text
    assert "1 diverged (not averaged)" in text and "## Diverged runs (not averaged)" in text
    assert "became non-finite" in text.split("## Diverged runs")[1]


def test_an_evaluation_that_diverges_stops_the_run_at_that_epoch(teacher_file, tmp_path, write_cfg):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nan_eval.py").write_text(NAN_IN_EVAL)
    folder = tmp_path / "run"
    cfg = student_cfg(str(tmp_path / "data"), folder, teacher_file, distill="kd", alpha=0.9, epochs=2,
                      model_s="nan_eval:model", plugin_path=str(plugins))
    try:
        code, out, err = run_script("train_student.py", write_cfg(cfg))
    finally:
        import sys
        sys.modules.pop("nan_eval", None)
    assert code == 2, out + err
    assert "the evaluation after epoch 1 diverged (test loss nan)" in err
    assert "epoch 2" not in out and len(err.strip().splitlines()) == 1
    log = (folder / "log.txt").read_text()
    assert log.splitlines()[-1].startswith("diverged: the evaluation after epoch 1 diverged")
    assert not any(name.endswith(".pth") for name in os.listdir(folder))  # no epoch was healthy


def test_evaluate_refuses_a_diverged_checkpoint(tmp_path, synthetic_dir):
    net = model_dict["resnet8"](num_classes=100)
    with torch.no_grad():
        net.fc.weight[0, 0] = float("nan")
    path = tmp_path / "resnet8_last.pth"
    torch.save({"model": net.state_dict()}, path)
    code, out = call_cli(evaluate, [str(path), "--model", "resnet8", "--dataset", "synthetic", "data_dir",
                                    synthetic_dir, "num_workers", "0", "--device", "cpu"])
    assert code == 2
    assert out.strip().endswith("(resnet8 on synthetic) scores test loss nan: its weights have diverged"), out


def test_a_second_launch_on_a_folder_being_trained_is_refused_and_a_killed_holder_blocks_nothing(
        teacher_file, synthetic_dir, tmp_path, write_cfg):
    import signal
    import socket
    import time

    from runs import start_script
    folder = tmp_path / "run"
    cfg = student_cfg(synthetic_dir, folder, teacher_file, distill="kd", alpha=0.9, epochs=30,
                      synthetic_train_size=600, synthetic_test_size=200, batch_size=64, lr_decay_epochs="20")
    path = write_cfg(cfg)
    first = start_script("train_student.py", path)
    try:
        deadline = time.time() + 120
        while not (folder / "log.txt").exists() or "epoch 1 " not in (folder / "log.txt").read_text():
            assert first.poll() is None and time.time() < deadline, first.stdout.read()
            time.sleep(0.1)
        code, out, err = run_script("train_student.py", path)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert err.startswith(f"error: {folder} is being trained by pid {first.pid} on {socket.gethostname()} since ")
        assert first.poll() is None  # the holder trains on, untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed holder's lock went with it: the folder can be taken at once (a relaunch resumes it)
    from helper.run import RunFolder
    again = RunFolder.__new__(RunFolder)
    again.path = str(folder)
    again.lock()
    assert f"pid {os.getpid()} on" in (folder / ".lock").read_text()
    again.release()


def wait_for_step(folder, process, epoch=1, limit=120):
    """Until the run has finished epoch `epoch` (and a moment more: into the next one)."""
    import time
    deadline = time.time() + limit
    while not (folder / "log.txt").exists() or f"epoch {epoch} " not in (folder / "log.txt").read_text():
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.05)
    time.sleep(0.5)


def test_a_preemption_signal_saves_the_step_and_the_run_ends_bit_identical(teacher_file, synthetic_dir, tmp_path,
                                                                            write_cfg):
    """SIGUSR1 mid-epoch: latest.pth holds that step; run again, the epoch goes on from it."""
    import signal

    from helper.checkpoint import load_checkpoint
    from runs import assert_same_weights, start_script, weights
    cfg = dict(distill="crd", beta=0.8, nce_k=64, feat_dim=16, epochs=3, lr_decay_epochs="2", batch_size=8,
               synthetic_train_size=600, synthetic_test_size=200)
    whole = tmp_path / "whole"
    code, _, err = run_script("train_student.py", write_cfg(student_cfg(synthetic_dir, whole, teacher_file, **cfg)))
    assert code == 0, err
    folder = tmp_path / "preempted"
    path = write_cfg(student_cfg(synthetic_dir, folder, teacher_file, **cfg))
    process = start_script("train_student.py", path)
    wait_for_step(folder, process)
    process.send_signal(signal.SIGUSR1)
    out = process.communicate(timeout=60)[0]
    assert process.returncode == 128 + signal.SIGUSR1, out
    state = load_checkpoint(str(folder / "latest.pth"))
    partial = state["partial"]
    assert state["epoch"] == 1 and partial["epoch"] == 2 and 0 < partial["steps"] < 75, out
    assert f"holds this step ({partial['steps']} of epoch 2)" in out
    code, out, err = run_script("train_student.py", path)
    assert code == 0, err
    assert f"resuming after epoch 1 (in epoch 2 after step {partial['steps']}" in out
    assert_same_weights(weights(whole / "resnet8_last.pth"), weights(folder / "resnet8_last.pth"))
    assert_same_weights(load_checkpoint(str(whole / "latest.pth"))["distiller"],
                        load_checkpoint(str(folder / "latest.pth"))["distiller"])  # CRD's memory too
    logged = [line.split(" seconds")[0] for line in (folder / "log.txt").read_text().splitlines()
              if line.startswith("epoch 3 ")]
    assert logged == [line.split(" seconds")[0] for line in (whole / "log.txt").read_text().splitlines()
                      if line.startswith("epoch 3 ")]


def test_a_slurm_job_warned_of_preemption_saves_requeues_itself_and_ends_bit_identical(
        teacher_file, synthetic_dir, tmp_path, write_cfg, monkeypatch):
    """sweep.py's Slurm job (helper/requeue.py) through submitit's local executor, which requeues
    as Slurm does: the job process (the local executor's task) gets Slurm's warning signal, USR2."""
    import signal
    import sys
    import time

    import submitit

    from helper.checkpoint import load_checkpoint
    from helper.requeue import RequeuedCommand
    from runs import assert_same_weights, weights
    cfg = dict(distill="kd", alpha=0.9, epochs=3, lr_decay_epochs="2", batch_size=8, synthetic_train_size=600,
               synthetic_test_size=200)
    whole = tmp_path / "whole"
    code, _, err = run_script("train_student.py", write_cfg(student_cfg(synthetic_dir, whole, teacher_file, **cfg)))
    assert code == 0, err
    folder = tmp_path / "job"
    path = write_cfg(student_cfg(synthetic_dir, folder, teacher_file, **cfg))
    monkeypatch.setenv("PYTHONPATH", ROOT)
    executor = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(timeout_min=10)
    job = executor.submit(RequeuedCommand([sys.executable, os.path.join(ROOT, "train_student.py"), "-cfg", path],
                                          cwd=ROOT, max_requeues=2))
    deadline = time.time() + 120
    while not (folder / "log.txt").exists() or "epoch 1 " not in (folder / "log.txt").read_text():
        assert not job.done() and time.time() < deadline, job.stderr()
        time.sleep(0.05)
    time.sleep(0.5)
    controller = job._process.pid  # the local executor's controller; its child is the job process
    with open(f"/proc/{controller}/task/{controller}/children") as f:
        task, = map(int, f.read().split())
    os.kill(task, signal.SIGUSR2)
    job.result()
    log = (folder / "log.txt").read_text()
    assert "requeued after a preemption or time limit (1 of at most 2)" in log, log
    assert "resuming after epoch 1 (in epoch 2 after step" in log, log
    assert "requeued (1 of at most 2)" in job.stdout()
    assert_same_weights(weights(whole / "resnet8_last.pth"), weights(folder / "resnet8_last.pth"))
    assert_same_weights(load_checkpoint(str(whole / "latest.pth"))["distiller"],
                        load_checkpoint(str(folder / "latest.pth"))["distiller"])
