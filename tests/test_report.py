"""report.py: the paper's tables from run folders, on hand-made logs (aggregation, cells, rules) and
on real tiny runs of train_teacher.py / train_student.py (tables, unfinished runs, the figure)."""
import os
import statistics
import sys

import pytest
import torch

import report
import sweep
from helper.checkpoint import load_checkpoint, save_atomic
from helper.config import dump, load_config
from helper.grid import CONFIGS, method_folders, parse_log, read_config, read_log, row_names
from models import model_dict
from plugin_fixtures import GOOD
from runs import call_cli, run_script

TINY = ["dataset", "synthetic", "synthetic_train_size", "64", "synthetic_test_size", "32", "epochs", "2",
        "lr_decay_epochs", "1", "batch_size", "16", "num_workers", "0", "device", "cpu", "tensorboard", "False",
        "print_freq", "1000"]


def call(argv):
    return call_cli(report, argv)


def rows_of(text, table="similar"):
    """{row label: [cell texts]} of one table of the markdown."""
    part = text.split(f"## Teacher and student of {table} architectures")[1].split("\n## ")[0]
    rows = {}
    for line in part.splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def dataset_rows(text, name):
    """{row label: [cell texts]} and the column headers of the table of data set `name`."""
    part = text.split(f"## {name}: runs outside the paper's tables")[1].split("\n## ")[0]
    header = next(line for line in part.splitlines() if line.startswith("| |"))
    return other_rows(part), [c.strip() for c in header.strip().strip("|").split("|")[1:]]


def third_rows(text):
    """{row label: [cell texts]} of the third table (other methods)."""
    return other_rows(text.split("## Other methods, published elsewhere")[1].split("\n## ")[0])


def other_rows(part):
    """{row label: [cell texts]} of the third table (other methods), columns: the 11 pairs."""
    return {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in part.splitlines() if line.startswith("| ") and not line.startswith("| |")}


# ----------------------------------------------------------------------------- hand-made runs

def make_run(folder, cfg, accs, finished=True, epochs=None, extra=(), done=None, kind="student"):
    """A run folder as the scripts write it: config.yaml, log.txt with one line per entry of `accs`
    (test top-1 per epoch), latest.pth holding only the finished flag and the epoch."""
    epochs = epochs or len(accs)
    overrides = ["epochs", epochs, "lr_decay_epochs", 1, "save_folder", str(folder), *extra]
    config = load_config(os.path.join(CONFIGS, cfg), [str(o) for o in overrides], kind)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(dump(config))
    best, lines = 0.0, ["run folder x on cpu", "teacher resnet32x4 from y: test top-1 79.42 top-5 95.00"]
    for epoch, acc in enumerate(accs, 1):
        best = max(best, acc)
        lines.append(f"epoch {epoch} lr 0.05 train_ce 4.1 train_loss 4.5 train_acc 10.5 test_loss 4.2 "
                     f"test_acc {acc} test_acc_top5 30 best_acc {best} seconds 0.5")
    if finished:
        lines.append(f"done: best top-1 {best:.2f} in {folder}")
    with open(os.path.join(folder, "log.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    torch.save({"finished": finished, "epoch": len(accs) if done is None else done},
               os.path.join(folder, "latest.pth"))


KD = "kds/kd/resnet32x4_resnet8x4.yaml"


def test_cells_mean_std_paper_and_difference(tmp_path):
    for seed, accs in enumerate(([50.0, 70.0, 69.0], [60.0, 72.0, 71.5], [74.0, 73.0, 73.5])):
        make_run(tmp_path / f"kd{seed}", KD, accs, extra=("seed", seed))
    code, out = call([str(tmp_path)])
    assert code == 0, out
    kd = rows_of(out)["KD"]
    # resnet32x4_resnet8x4 is the third pair of the similar table; the paper: 74.54
    assert kd[2] == "72.00 ± 2.00 (n=3; 95% CI 67.03 to 76.97); paper 74.54; Δ -2.54"
    assert kd[0] == "paper 73.73"
    assert "Rule: **best**" in out and "The paper's figures use the rule **best**" in out

    code, out = call([str(tmp_path), "--rule", "last"])
    assert code == 0, out
    mean, std = statistics.fmean([69.0, 71.5, 73.5]), statistics.stdev([69.0, 71.5, 73.5])
    low, high = __import__("scipy").stats.t.interval(0.95, 2, loc=mean, scale=std / 3 ** 0.5)
    assert rows_of(out)["KD"][2] == (f"{mean:.2f} ± {std:.2f} (n=3; 95% CI {low:.2f} to {high:.2f}); paper 74.54; "
                                     f"Δ {round(mean, 2) - 74.54:+.2f}")
    assert "Rule: **last**" in out


def test_method_names_map_to_rows(tmp_path):
    make_run(tmp_path / "askd", "kds/ours/resnet32x4_resnet8x4.yaml", [75.0])
    make_run(tmp_path / "hint", "kds/fitnet/res110_res32.yaml", [70.0])
    make_run(tmp_path / "fsp", "kds/fsp/resnet32x4_resnet8x4.yaml", [71.0])
    make_run(tmp_path / "crd", "kds/crd/res50_vgg8.yaml", [74.0])
    code, out = call([str(tmp_path)])
    assert code == 0, out
    similar, different = rows_of(out), rows_of(out, "different")
    assert similar["ASKD (ours)"][2] == "75.00 (n=1); paper 75.34; Δ -0.34"
    assert similar["FitNet"][0] == "70.00 (n=1); paper 71.04; Δ -1.04"
    assert similar["FSP"][2].startswith("71.00 (n=1)") and similar["FSP"][4] == "N/A"
    assert different["CRD"][2] == "74.00 (n=1); paper 74.41; Δ -0.41"
    assert "FSP" not in different


def test_teacher_and_vanilla_rows_from_teacher_runs(tmp_path):
    make_run(tmp_path / "t", "train_vanilla/resnet32x4.yaml", [79.0, 80.0], kind="teacher")
    make_run(tmp_path / "s", "train_vanilla/MobileNetV2.yaml", [64.0], kind="teacher")
    make_run(tmp_path / "other", "train_vanilla/resnet56.yaml", [70.0], kind="teacher")
    code, out = call([str(tmp_path)])
    assert code == 0, out
    similar, different = rows_of(out), rows_of(out, "different")
    assert similar["Teacher"][2] == "80.00 (n=1); paper 79.42; Δ +0.58"
    assert similar["Teacher"][0] == "paper 74.31"   # no run: the paper's figure only
    assert different["Teacher"][3:5] == ["80.00 (n=1); paper 79.42; Δ +0.58"] * 2   # res32x4 -> ShuffleV1/V2
    assert different["Student (vanilla)"][:2] == ["64.00 (n=1); paper 65.45; Δ -1.45"] * 2  # both MobileNetV2 pairs
    rows, columns = dataset_rows(out, "cifar100")   # no pair of the paper: a table of its own
    assert columns == ["resnet56"] and rows == {"Student (vanilla)": ["70.00 (n=1)"]}
    assert "## Runs left out" not in out


def test_unfinished_runs_are_listed_not_averaged(tmp_path):
    make_run(tmp_path / "a", KD, [70.0], extra=("seed", 0))
    make_run(tmp_path / "b", KD, [99.0], epochs=3, finished=False, extra=("seed", 1))
    make_run(tmp_path / "c", KD, [98.0, 99.0], epochs=2, finished=False, done=2, extra=("seed", 2))
    code, out = call([str(tmp_path)])
    assert code == 0, out
    assert rows_of(out)["KD"][2] == "70.00 (n=1); paper 74.54; Δ -4.54"
    assert "## Unfinished runs (not averaged)" in out
    assert f"| `{tmp_path / 'b'}` | kd resnet32x4 -> resnet8x4 | epoch 1 of 3 |" in out
    assert f"`{tmp_path / 'c'}`" in out
    assert "3 found, 1 finished and averaged, 2 unfinished" in out


def test_notes_on_mixed_epochs_and_repeated_seeds(tmp_path):
    make_run(tmp_path / "a", KD, [70.0], extra=("seed", 0))
    make_run(tmp_path / "b", KD, [71.0, 72.0], extra=("seed", 0))
    code, out = call([str(tmp_path)])
    assert "runs of 1, 2 epochs averaged together" in out and "seed(s) 0 counted more than once" in out


def test_rule_last_needs_the_final_epoch_line(tmp_path):
    make_run(tmp_path / "a", KD, [70.0, 71.0])
    log = tmp_path / "a" / "log.txt"
    log.write_text("\n".join(line for line in log.read_text().splitlines() if not line.startswith("epoch 2 ")))
    code, out = call([str(tmp_path), "--rule", "last"])
    assert code == 0 and "log.txt has no test_acc for epoch 2 (needed by --rule last)" in out
    code, out = call([str(tmp_path)])   # best still knows: best_acc of the lines there
    assert rows_of(out)["KD"][2].startswith("70.00 (n=1)")


def test_datasets_are_not_mixed(tmp_path):
    """A run on another data set never fills the paper's cells: its data set has its own table,
    where the vanilla runs of its teacher and student join its pair's column."""
    make_run(tmp_path / "a", KD, [70.0])
    make_run(tmp_path / "b", KD, [10.0], extra=("dataset", "synthetic"))
    make_run(tmp_path / "t", "train_vanilla/resnet32x4.yaml", [30.0], kind="teacher", extra=("dataset", "synthetic"))
    make_run(tmp_path / "s", "train_vanilla/resnet8x4.yaml", [5.0], kind="teacher", extra=("dataset", "synthetic"))
    code, out = call([str(tmp_path)])
    assert code == 0, out
    assert rows_of(out)["KD"][2] == "70.00 (n=1); paper 74.54; Δ -4.54"
    assert rows_of(out)["Teacher"][2] == "paper 79.42"   # the synthetic teacher is not CIFAR-100's
    rows, columns = dataset_rows(out, "synthetic")
    assert columns == ["resnet32x4 → resnet8x4"]
    assert rows == {"Teacher": ["30.00 (n=1)"], "Student (vanilla)": ["5.00 (n=1)"], "KD": ["10.00 (n=1)"]}
    code, out = call([str(tmp_path), "--dataset", "synthetic"])
    assert code == 0 and "# Top-1 (%) of the runs under" in out and "## Teacher and student of" not in out
    assert dataset_rows(out, "synthetic")[0]["KD"] == ["10.00 (n=1)"]


def test_parse_log_and_plain_yaml_config(tmp_path):
    text = ("run folder x\ninit epoch 1 loss 3.0 seconds 1\nepoch 1 lr 0.05 test_acc 10 best_acc 10\n"
            "epoch 2 lr 0.05 test_acc nan\nepoch 2 lr 0.05 test_acc 12.5 best_acc 12.5\n"
            "epoch x test_acc 3\nepoch 3 lr 0.005\nWARNING: epoch 4 test_acc 1\n")
    assert parse_log(text) == {1: {"lr": 0.05, "test_acc": 10.0, "best_acc": 10.0},
                               2: {"lr": 0.05, "test_acc": 12.5, "best_acc": 12.5}}
    (tmp_path / "config.yaml").write_text("model_s: resnet8x4\nmodel_t: resnet32x4  # teacher\nepochs: 2\n")
    assert read_config(str(tmp_path)) == {"model_s": "resnet8x4", "model_t": "resnet32x4", "epochs": 2}


def test_user_errors(tmp_path, monkeypatch):
    code, out = call([str(tmp_path / "missing")])
    assert code == 2 and out.startswith("error: ") and "is not a folder" in out
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if not installed
    code, out = call([str(tmp_path), "--plot", str(tmp_path / "c.png")])
    assert code == 2
    assert out.strip() == "error: --plot needs matplotlib, which is not installed: pip install matplotlib"


def test_third_table_other_methods_published_and_run(tmp_path):
    """The third table: other papers' figures on the paper's pairs (N/A where none is published),
    runs of those methods beside them; KD with DOT is the kd_dot row, not the KD row."""
    make_run(tmp_path / "kd", KD, [70.0])
    make_run(tmp_path / "kd_dot", KD, [76.0], extra=("optimizer", "dot"))
    make_run(tmp_path / "vid", "kds/kd/res50_vgg8.yaml", [71.0])
    make_run(tmp_path / "ab", "kds/kd/res110_res20.yaml", [69.0])
    make_run(tmp_path / "pkt_dot", KD, [1.0], extra=("optimizer", "dot"))
    make_run(tmp_path / "ofd", "kds/kd/res32x4_shufflenetv1.yaml", [77.5])
    for name, distill in (("vid", "vid"), ("ab", "abound"), ("pkt_dot", "pkt"), ("ofd", "ofd")):
        config = tmp_path / name / "config.yaml"
        text = config.read_text()
        assert 'distill: "kd"' in text
        config.write_text(text.replace('distill: "kd"', f'distill: "{distill}"'))
    code, out = call([str(tmp_path)])
    assert code == 0, out
    assert rows_of(out)["KD"][2] == "70.00 (n=1); paper 74.54; Δ -4.54"
    part = out.split("## Other methods, published elsewhere")[1].split("\n## ")[0]
    rows = other_rows(part)
    # columns: the 5 similar pairs, then the 6 different ones
    assert rows["KD+DOT [dot]"][2] == "76.00 (n=1); paper 75.12; Δ +0.88"
    assert rows["KD+DOT [dot]"][9] == "paper 75.55" and rows["KD+DOT [dot]"][0] == "N/A"
    assert rows["VID [crd]"][7] == "71.00 (n=1); paper 70.30; Δ +0.70"
    assert rows["AB [crd]"][1] == "69.00 (n=1); paper 69.53; Δ -0.53"
    assert rows["DKD [dkd]"][:3] == ["paper 74.11", "N/A", "paper 76.32"]
    assert rows["NST [crd]"][5] == "paper 58.16" and rows["FT [crd]"][10] == "paper 72.03"
    assert "- [crd] Tian et al., Contrastive Representation Distillation" in part
    assert rows["pkt optimizer dot"][2] == "1.00 (n=1); paper N/A"   # a variant no folder ships: its own row
    assert rows["OFD [none]"][8] == "77.50 (n=1); paper N/A" and rows["OFD [none]"][0] == "N/A"
    assert "6 found, 6 finished and averaged" in out


def test_empty_root_gives_the_paper_tables(tmp_path):
    code, out = call([str(tmp_path)])
    assert code == 0 and "0 found" in out and rows_of(out)["ASKD (ours)"][2] == "paper 75.34"


# ----------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Two vanilla resnet20 runs, a KD res110 -> res20 run, and an unfinished resnet20 run."""
    root = tmp_path_factory.mktemp("report_runs")
    data, teacher = str(root / "data"), str(root / "resnet110_vanilla.pth")
    torch.manual_seed(0)
    torch.save({"model": model_dict["resnet110"](num_classes=100).state_dict()}, teacher)
    runs = root / "runs"
    make_real_runs(runs, data, teacher)  # one thread: conftest.py
    return runs


def make_real_runs(runs, data, teacher):
    for seed in (0, 1, 2):
        code, _, err = run_script("train_teacher.py", os.path.join(CONFIGS, "train_vanilla", "resnet20.yaml"),
                                  *TINY, "data_dir", data, "seed", seed, "save_folder", runs / f"vanilla_{seed}")
        assert code == 0, err
    code, _, err = run_script("train_student.py", os.path.join(CONFIGS, "kds", "kd", "res110_res20.yaml"),
                              *TINY, "data_dir", data, "path_t", teacher, "save_folder", runs / "kd_0")
    assert code == 0, err
    latest = str(runs / "vanilla_2" / "latest.pth")
    state = load_checkpoint(latest)
    state["finished"], state["epoch"] = False, 1   # as if stopped after epoch 1
    save_atomic(state, latest)


def test_report_of_real_runs(real_runs, tmp_path):
    out = tmp_path / "report.md"
    code, text = call([str(real_runs), "--out", str(out)])
    assert code == 0, text
    md = out.read_text()
    assert "4 found, 3 finished and averaged, 1 unfinished" in md
    vanilla = [max(f["test_acc"] for f in read_log(str(real_runs / f"vanilla_{s}")).values()) for s in (0, 1)]
    mean, std = statistics.fmean(vanilla), statistics.stdev(vanilla)
    rows, columns = dataset_rows(md, "synthetic")   # synthetic data: the table of its own, not the paper's
    assert columns == ["resnet110 → resnet20"] and "## Teacher and student of" not in md
    assert rows["Student (vanilla)"][0].startswith(f"{mean:.2f} ± {std:.2f} (n=2; 95% CI ")
    assert rows["KD"] == [f"{max(f['test_acc'] for f in read_log(str(real_runs / 'kd_0')).values()):.2f} (n=1)"]
    assert f"| `{real_runs / 'vanilla_2'}` | vanilla resnet20 | epoch 2 of 2 |" in md   # logged 2, saved 1
    code, text = call([str(real_runs), "--rule", "last"])
    last = [read_log(str(real_runs / f"vanilla_{s}"))[2]["test_acc"] for s in (0, 1)]
    assert dataset_rows(text, "synthetic")[0]["Student (vanilla)"][0].startswith(f"{statistics.fmean(last):.2f} ±")


def test_plot_of_real_runs(real_runs, tmp_path):
    png = tmp_path / "figs" / "curves.png"
    code, text = call([str(real_runs), "--plot", str(png)])
    assert code == 0, text
    assert f"wrote {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


def test_plot_without_matplotlib_is_one_line(real_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    code, text = call([str(real_runs), "--plot", str(tmp_path / "curves.png")])
    assert code == 2 and text.strip() == "error: --plot needs matplotlib, which is not installed: pip install matplotlib"
    assert not (tmp_path / "curves.png").exists()


def test_logit_methods_of_2022_2025_meet_their_published_figures(tmp_path):
    """KD with logit_stand is the KD+LS row, CTKD over DKD its own row, DIST and TTM theirs."""
    make_run(tmp_path / "kd_ls", "kds/kd_ls/resnet32x4_resnet8x4.yaml", [77.0])
    make_run(tmp_path / "dist", "kds/dist/resnet32x4_resnet8x4.yaml", [76.0])
    make_run(tmp_path / "ttm", "kds/ttm/res110_res20.yaml", [71.0])
    make_run(tmp_path / "ctkd_dkd", "kds/ctkd_dkd/wrn-40-2_wrn-16-2.yaml", [75.0])
    code, out = call([str(tmp_path)])
    assert code == 0, out
    rows = third_rows(out)
    assert rows["KD+LS [ls]"][2] == "77.00 (n=1); paper 76.62; Δ +0.38"
    assert rows["DIST [dist_kd]"][2] == "76.00 (n=1); paper 76.31; Δ -0.31"
    assert rows["TTM [ttm]"][1] == "71.00 (n=1); paper 71.46; Δ -0.46"
    assert rows["CTKD over DKD [none]"][3] == "75.00 (n=1); paper N/A"
    assert rows["CTKD [ctkd]"][:2] == ["paper 73.52", "paper 70.99"]
    assert "is not a row" not in out


def test_the_classifier_methods_meet_their_published_figures(tmp_path):
    """SDD over DKD is the SD-DKD row, SimKD its own; CAT-KD and SRD rows for runs only."""
    make_run(tmp_path / "sdd_dkd", "kds/sdd_dkd/res32x4_shufflenetv2.yaml", [78.0])
    make_run(tmp_path / "simkd", "kds/simkd/resnet32x4_resnet8x4.yaml", [78.0])
    make_run(tmp_path / "catkd", "kds/catkd/resnet32x4_resnet8x4.yaml", [76.0])
    make_run(tmp_path / "srd", "kds/srd/resnet32x4_resnet8x4.yaml", [75.0])
    code, out = call([str(tmp_path)])
    assert code == 0, out
    rows = third_rows(out)
    assert "78.00 (n=1); paper 78.05; Δ -0.05" in rows["SD-DKD [sdd]"]
    assert "78.00 (n=1); paper 78.08; Δ -0.08" in rows["SimKD [simkd]"]
    assert "76.00 (n=1); paper N/A" in rows["CAT-KD [catkd_unchecked]"]
    assert "75.00 (n=1); paper N/A" in rows["SRD [srd_imagenet]"]
    assert "is not a row" not in out


def test_every_shipped_folder_is_its_own_row():
    """Each folder of configs/kds/ runs as a row no other folder runs as (row_of tells them apart)."""
    names = row_names()
    assert sorted(names.values()) == sorted(method_folders())


def test_a_new_method_is_in_the_sweep_and_the_report(tmp_path):
    """A method nobody listed (a plugin with its own config folder) is a row of a dry-run sweep
    and of the rendered report: nothing names the methods but the registry and the config tree."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "logit_mse_plugin.py").write_text(GOOD)
    folder = tmp_path / "my_configs" / "kds" / "logit_mse"
    folder.mkdir(parents=True)
    shipped = open(os.path.join(CONFIGS, "kds", "kd", "res110_res20.yaml")).read()
    assert "distill: 'kd'" in shipped
    (folder / "res110_res20.yaml").write_text(
        shipped.replace("distill: 'kd'", "distill: 'logit_mse_plugin:LogitMSE'")
        + f"plugin_path: '{plugins}'\nmse_weight: 2\n")
    roots = ["--configs", str(tmp_path / "my_configs")]
    code, out = call_cli(sweep, ["--methods", "logit_mse", "vanilla", "--pairs", "res110_res20", "--seeds", "2",
                                 "--dry-run", "--save_root", str(tmp_path / "sweep"), *roots])
    assert code == 0, out
    assert "dry run: 4 run(s)" in out and "similar/logit_mse/res110_res20/seed_1" in out
    code, out = call_cli(sweep, ["--methods", "all", "--pairs", "res110_res20", "--seeds", "1", "--dry-run",
                                 "--save_root", str(tmp_path / "sweep"), *roots])
    assert code == 0 and "similar/logit_mse/res110_res20/seed_0" in out and "similar/dkd/res110_res20" in out
    code, out = call_cli(sweep, ["--methods", "logit_mse", "--dry-run", "--save_root", str(tmp_path / "sweep")])
    assert code == 2 and "unknown method 'logit_mse'" in out   # its folder not given

    make_run(tmp_path / "runs" / "mse", str(folder / "res110_res20.yaml"), [70.5])
    code, out = call([str(tmp_path / "runs"), *roots])
    assert code == 0, out
    rows = third_rows(out)
    assert rows["logit_mse"][1] == "70.50 (n=1); paper N/A" and rows["logit_mse"][0] == "N/A"
    code, out = call([str(tmp_path / "runs")])   # without its folder: the row is named by `distill`
    rows = third_rows(out)
    assert rows["logit_mse_plugin:LogitMSE"][1] == "70.50 (n=1); paper N/A" and "logit_mse" not in rows
