"""torch's CPU threads (helper/threads.py): the rule, the line each run logs, and that a run takes
the config's num_threads, else OMP_NUM_THREADS, else the automatic choice."""
import os
import subprocess
import sys

import pytest

from common.errors import UserError
from helper.config import load_config
from helper.threads import available_cores, choose_threads, counted
from runs import ROOT, tiny_config


@pytest.mark.parametrize("device, key, workers, cores, omp, expected", [
    ("cpu", 0, 2, 2, None, (1, "2 cores, 2 loader workers")),    # the quick start on 2 cores
    ("cpu", 0, 0, 2, None, (2, "2 cores, 0 loader workers")),    # no worker: every core
    ("cpu", 0, 1, 2, None, (1, "2 cores, 1 loader worker")),
    ("cpu", 0, 1, 16, None, (15, "16 cores, 1 loader worker")),
    ("cpu", 0, 4, 16, "", (12, "16 cores, 4 loader workers")),   # an empty variable is unset
    ("cpu", 0, 8, 4, None, (1, "4 cores, 8 loader workers")),
    ("cpu", 0, 0, 1, None, (1, "1 core, 0 loader workers")),
    ("cpu", 0, 2, 2, "3", (None, "OMP_NUM_THREADS=3")),         # the user's (or the sweep's) choice
    ("cpu", 2, 2, 2, "1", (2, "num_threads 2")),                # the key wins over the variable
    ("cuda", 0, 4, 16, None, (None, "torch's default")),
    ("cuda", 0, 4, 16, "4", (None, "OMP_NUM_THREADS=4")),
    ("cuda", 6, 4, 16, None, (6, "num_threads 6")),
])
def test_the_rule(device, key, workers, cores, omp, expected):
    assert choose_threads(device, key, workers, cores, omp) == expected


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_cores_are_those_of_the_affinity():
    assert available_cores() == len(os.sched_getaffinity(0))


def test_a_negative_key_is_refused(write_cfg, synthetic_dir, tmp_path):
    path = write_cfg(tiny_config(synthetic_dir, str(tmp_path / "run")))
    with pytest.raises(UserError, match="'num_threads' must not be negative, got -1"):
        load_config(path, ["num_threads", "-1"], "teacher")


def logged_choice(cfg_path, omp, *overrides):
    """Run train_teacher.py as a process (OMP_NUM_THREADS `omp`, None: unset): its log's line
    of the thread choice."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train_teacher.py"), "-cfg", cfg_path, *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    save_folder = overrides[overrides.index("save_folder") + 1]
    with open(os.path.join(save_folder, "log.txt")) as f:
        lines = [line for line in f.read().splitlines() if " torch thread" in line]
    assert len(lines) == 1 and lines[0] in done.stdout, lines
    return lines[0]


@pytest.mark.parametrize("omp, overrides, expected", [
    (None, ("fast", "true", "num_workers", "2"), None),           # the fast path has no loader workers
    ("2", (), "cpu: 2 torch threads (OMP_NUM_THREADS=2)"),
    ("1", ("num_threads", "2"), "cpu: 2 torch threads (num_threads 2)"),
])
def test_a_run_logs_and_takes_the_choice(write_cfg, synthetic_dir, tmp_path, omp, overrides, expected):
    path = write_cfg(tiny_config(synthetic_dir, "", epochs=1, lr_decay_epochs="1"))
    cores = available_cores()
    expected = expected or f"cpu: {counted(cores, 'torch thread')} ({counted(cores, 'core')}, 0 loader workers)"
    assert logged_choice(path, omp, *overrides, "save_folder", str(tmp_path / "run")) == expected
