"""A user's own method, model and data set without a line of this repository changed: the
`PACKAGE.MODULE:NAME` form, `plugin_path`, entry points, the record in config.yaml and the
resume that refuses changed code, the one-line refusals, and examples/my_method installed and run
from another folder as a user runs it."""
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import evaluate
import plugin_fixtures as src
from common.errors import UserError
from helper.battery import DEFAULT_PAIRS, exit_status, run_battery, table
from helper.config import load_config
from runs import ROOT, call_cli, run_script, tiny_config


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """write(module, text): a module in a folder on sys.path; forgotten again after the test."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    written = []

    def write(module, text):
        (folder / f"{module}.py").write_text(text)
        importlib.invalidate_caches()
        written.append(module)
        return folder / f"{module}.py"
    yield write
    for module in written:
        sys.modules.pop(module, None)


def student_cfg(synthetic_dir, teacher_file, folder, **extra):
    cfg = tiny_config(synthetic_dir, str(folder), **{**dict(model_s="resnet8", model_t="resnet14",
                                                            path_t=teacher_file, epochs=1), **extra})
    cfg.pop("model")
    return cfg


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_plugin_method_and_model_train_are_recorded_and_resume_refuses_changed_code(
        plugins, synthetic_dir, teacher_file, tmp_path, write_cfg):
    source = plugins("goodmod", src.GOOD)
    folder = tmp_path / "run"
    path = write_cfg(student_cfg(synthetic_dir, teacher_file, folder, distill="goodmod:LogitMSE",
                                 model_s="goodmod:small_model", beta=1.0, mse_weight=2))
    code, out, err = run_script("train_student.py", path)
    assert code == 0, err
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["mse_weight"] == 2.0
    assert saved["plugins"]["distill"] == {"import": "goodmod:LogitMSE", "file": str(source), "sha256": sha256(source)}
    assert saved["plugins"]["model_s"]["import"] == "goodmod:small_model"
    assert "logit_mse" in (folder / "log.txt").read_text()

    code, out, err = run_script("train_student.py", path, "epochs", "2")
    assert code == 0 and "resuming after epoch 1" in out, err
    code, out = call_cli(evaluate, [str(folder / "goodmod.small_model_last.pth"), "--json"])
    assert code == 0, out
    assert json.loads(out)["model"] == "goodmod:small_model"

    source.write_text(src.GOOD + "# changed\n")
    code, out, err = run_script("train_student.py", path, "epochs", "3")
    assert code == 2
    assert "the source of distill goodmod:LogitMSE" in err and "changed since the run started" in err
    assert len(err.strip().splitlines()) == 1
    assert json.dumps(saved["plugins"]) in json.dumps(yaml.safe_load((folder / "config.yaml").read_text())["plugins"])


def test_a_plugin_data_set_trains_a_teacher(plugins, tmp_path, write_cfg):
    plugins("shapesmod", src.DATA_SET)
    cfg = tiny_config(str(tmp_path / "shapes"), str(tmp_path / "run"), dataset="shapesmod:SHAPES", epochs=1)
    code, out, err = run_script("train_teacher.py", write_cfg(cfg))
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["plugins"]["dataset"]["import"] == "shapesmod:SHAPES"
    assert (tmp_path / "shapes").is_dir()


def test_plugin_path_adds_a_folder(tmp_path, write_cfg, synthetic_dir, teacher_file):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "farmod.py").write_text(src.GOOD)
    cfg = student_cfg(synthetic_dir, teacher_file, tmp_path / "run", distill="farmod:LogitMSE")
    try:
        with pytest.raises(UserError, match="cannot import farmod.*plugin_path"):
            load_config(write_cfg(cfg), script="student")
        loaded = load_config(write_cfg(cfg), ["plugin_path", str(elsewhere)], "student")
        assert loaded.plugins.distill["file"] == str(elsewhere / "farmod.py")
    finally:
        sys.modules.pop("farmod", None)


@pytest.mark.parametrize("extra, message", [
    (dict(distill="nosuch_mod_xyz:Foo"), "cannot import nosuch_mod_xyz"),
    (dict(distill="goodmod:Missing"), "module goodmod .* has no 'Missing'"),
    (dict(distill="goodmod:NOT_A_METHOD"), "not a subclass of distillers.base.Distiller"),
    (dict(distill="goodmod"), "unknown method 'goodmod'"),
    (dict(model_s="goodmod:NOT_A_METHOD"), "model 'goodmod:NOT_A_METHOD' for 'model_s' .* not callable"),
    (dict(dataset="goodmod:small_model"), "not a data set: it lacks name, num_classes"),
    (dict(distill="brokenmod:X"), "no_such_module_anywhere"),
    (dict(distill="clashmod:Clash"), "declares the knob 'epochs', which is a common config key"),
    (dict(distill="redefmod:Clash"), "knob 'nce_k', which the built-in method crd declares with another meaning"),
    (dict(distill="kdd"), "did you mean 'kd'"),
])
def test_a_bad_plugin_is_one_line_before_any_run_folder(extra, message, plugins, synthetic_dir, teacher_file,
                                                        tmp_path, write_cfg):
    plugins("goodmod", src.GOOD)
    plugins("brokenmod", src.BROKEN_IMPORT)
    plugins("clashmod", src.SHADOWS_COMMON_KEY)
    plugins("redefmod", src.REDEFINES_BUILTIN_KNOB)
    folder = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(student_cfg(synthetic_dir, teacher_file, folder,
                                                                          **extra)))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not folder.exists()


def write_distribution(folder, name, groups):
    """An installed package's metadata (what pip writes): its entry points by group."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) for group, entries in groups.items()))


def test_entry_points_register_names_and_may_not_shadow_a_builtin(plugins, synthetic_dir, teacher_file, tmp_path,
                                                                  write_cfg):
    source = plugins("goodmod", src.GOOD)
    write_distribution(source.parent, "goodpkg", {"askd.methods": {"logit_mse": "goodmod:LogitMSE"},
                                                  "askd.models": {"small": "goodmod:small_model"}})
    cfg = student_cfg(synthetic_dir, teacher_file, tmp_path / "run", distill="logit_mse", model_s="small",
                      mse_weight=3)
    loaded = load_config(write_cfg(cfg), script="student")
    assert loaded.mse_weight == 3.0 and loaded.plugins.distill["import"] == "goodmod:LogitMSE"
    assert loaded.plugins.model_s["import"] == "goodmod:small_model"

    write_distribution(source.parent, "shadowpkg", {"askd.methods": {"dkd": "goodmod:LogitMSE"}})
    importlib.invalidate_caches()
    with pytest.raises(UserError, match="shadowpkg registers a method 'dkd'.*shadows the built-in method"):
        load_config(write_cfg(dict(cfg, distill="dkd")), script="student")


def test_a_method_owning_a_parameter_its_loss_never_uses_fails_the_battery_naming_it(plugins):
    plugins("unusedmod", src.UNUSED_PARAMETER)
    checks = run_battery("unusedmod:Unused", pairs=DEFAULT_PAIRS[:1], ddp=False)
    gradients = next(c for c in checks if c.name == "gradients")
    assert gradients.status == "fail" and "forgotten.weight" in gradients.reason, table("unused", checks)
    assert exit_status(checks) == 1


def test_the_example_package_installed_trains_resumes_and_passes_check_method(synthetic_dir, teacher_file, tmp_path):
    """examples/my_method as a user runs it: pip-installed, from a folder of its own."""
    package = tmp_path / "my_method"
    shutil.copytree(os.path.join(ROOT, "examples", "my_method"), package)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    def run(*argv):
        return subprocess.run([sys.executable, *map(str, argv)], cwd=work, env=env, capture_output=True, text=True)

    overrides = ["path_t", teacher_file, "model_t", "resnet14", "data_dir", synthetic_dir,
                 "synthetic_train_size", 600, "synthetic_test_size", 200, "epochs", 1, "lr_decay_epochs", 1]
    config = package / "configs" / "embed_cos.yaml"
    done = run(os.path.join(ROOT, "train_student.py"), "-cfg", config, *overrides)
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((work / "save" / "embed_cos" / "config.yaml").read_text())
    assert saved["cos_weight"] == 2.0
    assert saved["plugins"]["distill"]["import"] == "my_method.method:EmbedCosine"
    assert saved["plugins"]["distill"]["file"].startswith(str(site))
    assert saved["plugins"]["model_s"]["import"] == "my_method.model:tiny_cnn"
    resumed = run(os.path.join(ROOT, "train_student.py"), "-cfg", config, *overrides[:-4], "epochs", 2,
                  "lr_decay_epochs", 1)
    assert resumed.returncode == 0 and "resuming after epoch 1" in resumed.stdout, resumed.stderr

    own = package / "configs"   # its kds/embed_cos/ folder: a row of the sweep and of the report
    swept = run(os.path.join(ROOT, "sweep.py"), "--configs", own, "--methods", "embed_cos", "--table", "similar",
                "--seeds", 1, "--dry-run", "--save_root", tmp_path / "sweep")
    assert swept.returncode == 0 and "similar/embed_cos/resnet32x4_resnet8x4/seed_0" in swept.stdout, swept.stderr
    reported = run(os.path.join(ROOT, "report.py"), work / "save", "--configs", own)
    assert reported.returncode == 0, reported.stderr
    table = reported.stdout.split("## synthetic: runs outside the paper's tables")[1]
    assert "| | resnet14 → tiny_cnn |" in table and "| embed_cos | " in table
    (tmp_path / "empty").mkdir()
    empty = run(os.path.join(ROOT, "report.py"), tmp_path / "empty", "--configs", own)
    assert "| embed_cos | N/A | N/A |" in empty.stdout   # its row of the third table: no run, no figure

    checked = run(os.path.join(ROOT, "check_method.py"), "embed_cos", "--pairs", "resnet14:tiny_cnn", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout.strip().splitlines()[-1])
    assert report["passed"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["ddp"] == statuses["resume"] == statuses["knobs"] == "pass"
