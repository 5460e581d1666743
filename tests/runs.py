"""Running the training scripts from tests: in-process (fast) or as a subprocess (signals)."""
import contextlib
import io
import os
import runpy
import subprocess
import sys

import torch

from helper.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir, save_folder, **extra):
    """A teacher config that trains resnet8 for two short epochs on the shared synthetic set."""
    cfg = dict(dataset="synthetic", data_dir=data_dir, synthetic_train_size=600, synthetic_test_size=200,
               model="resnet8", epochs=2, lr_decay_epochs="1", batch_size=64, num_workers=0,
               save_freq=1, print_freq=5, save_folder=save_folder, device="cpu", tensorboard=False)
    cfg.update(extra)
    return cfg


def run_script(script, cfg_path, *overrides):
    """Run train_teacher.py / train_student.py in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [script, "-cfg", cfg_path, *map(str, overrides)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def call_cli(module, argv):
    """A command-line module's `main(argv)` in this process, as its command line runs it
    (through `helper.cli.run_main`): (exit code, stdout + stderr)."""
    from helper.cli import run_main
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            run_main(lambda: sys.exit(module.main(argv)))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue()


def start_script(script, cfg_path, *overrides):
    """The script as a subprocess (stdout+stderr piped)."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, script), "-cfg", cfg_path, *map(str, overrides)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def weights(path):
    """The `model` state dict of a checkpoint file."""
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def make_cfg(distill, **overrides):
    """An unfrozen config of method `distill`: the defaults with `overrides` set (no file)."""
    from helper.config import get_cfg_defaults
    cfg = get_cfg_defaults(distill)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg
