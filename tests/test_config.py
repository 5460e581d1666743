"""Config loading: paper files load unchanged, overrides, coercion, and one-line errors."""
import warnings

import pytest
import yaml

from helper.config import (KEYS, dump, get_cfg_defaults, load_config, method_knobs, parse_epochs,
                           resume_differences, to_dict)
from common.errors import UserError

# A student config written the way the paper's files are (quoted decay list, 5e-4 as text).
PAPER_STYLE = """
print_freq: 100
save_freq: 40
batch_size: 64
num_workers: 4
epochs: 240
init_epochs: 30
learning_rate: 0.05
lr_decay_epochs: '150,180,210'
lr_decay_rate: 0.1
weight_decay: 5e-4
momentum: 0.9
dataset: 'cifar100'
data_dir: './data/cifar100'
model_s: 'resnet8x4'
model_t: 'resnet32x4'
path_t: './save/teacher_model/cifar100/resnet32x4_vanilla.pth'
save_folder: './save/student_model/cifar100/ours/resnet32x4_resnet8x4'
distill: 'ASKD'
gamma: 1  # task loss weight
alpha: 0  # hkd loss weight
beta: 1   # kd loss weight
kd_T: 4   # the temperature
group: "res_last"
w_rs: 5
r: 2
w_cs: 14
"""
COMMON_ONLY = PAPER_STYLE[:PAPER_STYLE.index("group:")]  # without ASKD's knobs


def test_paper_style_file_loads_with_numbers(write_cfg):
    cfg = load_config(write_cfg(PAPER_STYLE), script="student")
    assert cfg.weight_decay == pytest.approx(5e-4) and isinstance(cfg.weight_decay, float)
    assert cfg.lr_decay_epochs == [150, 180, 210]
    assert cfg.distill == "ASKD" and cfg.r == 2 and cfg.w_cs == 14.0
    assert cfg.is_frozen()


@pytest.mark.parametrize("value, expected", [
    ("150,180,210", [150, 180, 210]), ([150, 180], [150, 180]), (150, [150]), ("150", [150]),
])
def test_decay_epoch_forms(value, expected):
    assert parse_epochs(value) == expected


def test_command_line_overrides(write_cfg):
    cfg = load_config(write_cfg(PAPER_STYLE), ["epochs", "20", "lr_decay_epochs", "10,15",
                                               "batch_size", "8", "learning_rate", "1e-3"], "student")
    assert (cfg.epochs, cfg.lr_decay_epochs, cfg.batch_size) == (20, [10, 15], 8)
    assert cfg.learning_rate == pytest.approx(1e-3)
    cfg = load_config(write_cfg(PAPER_STYLE), ["epochs", "200", "lr_decay_epochs", "150"], "student")
    assert cfg.lr_decay_epochs == [150]


def test_every_key_documented_and_dump_round_trips(write_cfg):
    assert all(doc for _, _, doc in KEYS)
    cfg = load_config(write_cfg(PAPER_STYLE), script="student")
    text = dump(cfg)
    assert len(text.strip().splitlines()) == len(KEYS) + len(method_knobs(cfg.distill))
    again = load_config(write_cfg(text), script="student")
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("override, message", [
    (["learnig_rate", "0.1"], "did you mean 'learning_rate'"),
    (["epochs", "abc"], "'epochs' expects int"),
    (["epochs", "2.5"], "'epochs' expects int"),
    (["learning_rate", "-0.1"], "'learning_rate' must be positive"),
    (["batch_size", "0"], "'batch_size' must be positive"),
    (["epochs", "0"], "'epochs' must be positive"),
    (["lr_decay_epochs", "180,150"], "increasing"),
    (["epochs", "100"], "beyond epochs=100"),
    (["model_s", "resnet9"], "unknown model 'resnet9'"),
    (["model_t", "wrn_40_3"], "valid:"),
    (["distill", "kdd"], "unknown method 'kdd'"),
    (["distill", "crd", "mode", "loose"], "'mode' (crd's knob) must be one of exact, relax"),
    (["r", "1"], "'r' (ASKD's knob) must be at least 2"),
    (["amp", "fp8"], "'amp' must be one of"),
    (["device", "tpu"], "'device' must be"),
    (["path_t", ""], "'path_t' is required"),
    (["distill", "crd", "nce_m", "1.5"], "'nce_m' (crd's knob) must be in"),
    (["resume", "maybe"], "'resume' expects bool"),
    (["epochs"], "KEY VALUE pairs"),
])
def test_bad_values_are_one_line_user_errors(write_cfg, override, message):
    with pytest.raises(UserError) as err:
        load_config(write_cfg(COMMON_ONLY if "crd" in override else PAPER_STYLE), override, "student")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_teacher_needs_model(write_cfg):
    with pytest.raises(UserError, match="'model' is required"):
        load_config(write_cfg({"epochs": 2, "lr_decay_epochs": "1"}), script="teacher")


def test_yaml_errors_name_the_line(write_cfg):
    with pytest.raises(UserError, match="line 3"):
        load_config(write_cfg("model: resnet8\nepochs: 2\nbatch_size: [64\n"), script="teacher")
    with pytest.raises(UserError, match="empty"):
        load_config(write_cfg(""), script="teacher")
    with pytest.raises(UserError, match="not found"):
        load_config("/nonexistent/x.yaml", script="teacher")


def test_low_lr_models_warn_at_another_rate(write_cfg):
    text = PAPER_STYLE.replace("'resnet8x4'", "'ShuffleV2'")
    with pytest.warns(UserWarning, match="learning_rate 0.01"):
        load_config(write_cfg(text), script="student")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(write_cfg(text), ["learning_rate", "0.01"], "student")


def test_resume_differences_ignore_harmless_keys(write_cfg):
    cfg = load_config(write_cfg(PAPER_STYLE), script="student")
    saved = to_dict(cfg)
    other = load_config(write_cfg(PAPER_STYLE), ["print_freq", "7", "num_workers", "0", "epochs", "300"],
                        "student")
    assert resume_differences(saved, other) == []
    changed = load_config(write_cfg(PAPER_STYLE), ["beta", "2", "epochs", "220"], "student")
    diffs = resume_differences(saved, changed)
    assert any(d.startswith("beta") for d in diffs) and any(d.startswith("epochs") for d in diffs)


def test_defaults_are_fresh_copies():
    a, b = get_cfg_defaults(), get_cfg_defaults()
    a.lr_decay_epochs.append(5)
    assert b.lr_decay_epochs == [150, 180, 210]
    assert yaml.safe_load(dump(b))["lr_decay_epochs"] == [150, 180, 210]


def config_page():
    import os
    return open(os.path.join(os.path.dirname(__file__), "..", "docs", "config.md")).read()


def test_the_config_reference_documents_every_key():
    readme = config_page()
    missing = [key for key, _, _ in KEYS if f"| `{key}` |" not in readme]
    assert not missing, f"docs/config.md's key table lacks {missing}"


def test_the_distill_row_lists_every_registered_name_aliases_beside_their_method():
    import re

    from distillers import METHODS, distiller_names, method_names
    readme = config_page()
    meaning = re.search(r"^\| `distill` \| `\w+` \| (.*) \|$", readme, re.M).group(1)
    assert set(re.findall(r"`(\w+)`", meaning)) == set(distiller_names())
    for name in method_names():
        aliases = [alias for alias in distiller_names() if METHODS[alias] is METHODS[name] and alias != name]
        listed = re.search(rf"`{name}`(?: \(([^)]*)\))?", meaning).group(1) or ""
        assert re.findall(r"`(\w+)`", listed) == aliases, name


def test_text_keys_keep_what_was_typed(write_cfg):
    cfg = load_config(write_cfg("model: resnet8\namp: off\nepochs: 2\nlr_decay_epochs: 1\n"),
                      ["trial", "007", "device", "cpu"], "teacher")
    assert (cfg.amp, cfg.trial, cfg.device) == ("off", "007", "cpu")
    cfg = load_config(write_cfg("model: resnet8\nepochs: 2\nlr_decay_epochs: 1\n"), ["amp", "off"], "teacher")
    assert cfg.amp == "off"


def test_the_config_reference_lists_each_methods_knobs_as_declared():
    import re

    from common.knobs import declared_knobs
    from distillers import METHODS, method_names
    section = config_page()[config_page().index("## Each method's knobs"):]
    rows = set(re.findall(r"^\| `(\w+)` \| `(\w+)` \| `([^`]*)` \| (.*?) \| (.*?) \| .*?\|$", section, re.M))
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    declared = {(name, k.name, shown(k.default) or "''", k.doc, k.rule.text if k.rule else "")
                for name in method_names() for k in declared_knobs(METHODS[name]).values()}
    assert rows == declared, (rows - declared, declared - rows)


def test_a_knob_is_accepted_only_with_its_method(write_cfg):
    path = write_cfg(COMMON_ONLY)
    with pytest.raises(UserError, match="unknown config key 'nce_k'.*a knob of crd"):
        load_config(path, ["distill", "kd", "nce_k", "64"], "student")
    cfg = load_config(path, ["distill", "crd", "nce_k", "64.0", "mode", "relax"], "student")
    assert (cfg.nce_k, cfg.mode) == (64, "relax") and isinstance(cfg.nce_k, int)
    with pytest.raises(UserError, match="did you mean 'nce_k'"):
        load_config(path, ["distill", "crd", "nce_kk", "64"], "student")
    with pytest.raises(UserError, match=r"'nce_m' \(crd's knob\) must be in \[0, 1\), got 1.0"):
        load_config(path, ["distill", "crd", "nce_m", "1"], "student")
    assert "nce_k: 64  # CRD: negatives per sample" in dump(cfg)
    with pytest.warns(UserWarning, match="sets group, w_rs, r, w_cs, knobs of ASKD, not of crd: ignored"):
        cfg = load_config(write_cfg(PAPER_STYLE), ["distill", "crd"], "student")
    assert "w_rs" not in cfg and cfg.nce_k == 16384
    with pytest.raises(UserError, match="'plugins' in the command line is written by the loader"):
        load_config(path, ["plugins", "{}"], "student")


def test_two_builtin_methods_mean_the_same_by_one_knob_and_no_knob_is_a_common_key():
    from distillers import builtin_knob_owners
    owners = builtin_knob_owners()
    assert {"feat_dim", "warmup_epochs", "nce_k", "r"} <= set(owners)
    for name, declarations in owners.items():
        assert name not in {key for key, _, _ in KEYS}
        assert len({knob.meaning for _, knob in declarations}) == 1, name


def test_a_run_of_an_older_version_still_resumes(write_cfg):
    """Its saved config holds every method's keys of the old central table, and no `plugins`."""
    cfg = load_config(write_cfg(COMMON_ONLY), ["distill", "kd"], "student")
    old = {k: v for k, v in to_dict(cfg).items() if k not in ("plugins", "plugin_path")}
    old.update(hint_layer=2, feat_dim=128, mode="exact", nce_k=16384, nce_t=0.07, nce_m=0.5, group="res_last",
               r=2, w_rs=5.0, w_cs=14.0, layer=2, warmup_epochs=20, dkd_alpha=1.0, dkd_beta=8.0)
    assert resume_differences(old, cfg) == []
    crd = load_config(write_cfg(COMMON_ONLY), ["distill", "crd"], "student")
    assert resume_differences(dict(old, distill="crd"), crd) == []
    assert resume_differences(dict(old, distill="crd", nce_k=4096), crd) == ["nce_k: 4096 -> 16384"]


def test_config_yaml_reads_back_as_the_config_it_dumps():
    """A float with an exponent (opt_eps 1e-08) is written so that YAML reads a float back (YAML 1.1
    reads 1e-08 as a string): a run killed in its first epoch is then recognised as this config's."""
    cfg = get_cfg_defaults("ofa")
    cfg.warmup_lr, cfg.min_lr = 5e-7, 1e-5
    assert yaml.safe_load(dump(cfg)) == to_dict(cfg)
