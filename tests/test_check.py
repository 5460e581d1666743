"""--check (helper/check.py): every command line of the README's code blocks and of each script's
-h example, run with --check in a copy of the repository, validates and writes nothing; and the
exit status says what would stop the run (0 nothing, 1 files or run folder, 2 the config)."""
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from runs import ROOT, run_script, tiny_config

SCRIPTS = ("train_teacher.py", "train_student.py", "evaluate.py")
SKIPPED = {"save", "data", "runs", "build", ".git", "__pycache__", ".pytest_cache"}  # what runs and builds leave


@dataclasses.dataclass
class Command:
    where: str          # PAGE:LINE (the README or docs/), or the script's -h
    cwd: str            # relative to the repository's root
    argv: list          # the script (relative to cwd) and its arguments
    env: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        return f"{self.where}: {shlex.join(self.argv)}"


def readme_lines(text):
    """(line number, line) of the README's fenced shell blocks, a backslash continuation joined."""
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if block.group(1) not in ("bash", "sh", "shell", "console", ""):
            continue
        number = text.count("\n", 0, block.start(2)) + 1
        pending, first = "", None
        for offset, line in enumerate(block.group(2).splitlines()):
            first = first or number + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield first, pending + line
            pending, first = "", None
        yield None, None  # the end of a block: a `cd` holds no further


def pages():
    """The README and every page of docs/ (relative paths)."""
    return ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                                  if f.endswith(".md"))


def readme_commands():
    """The invocations of the three scripts in the README's and docs/'s code blocks (each command of
    an `&&` chain; after a `cd`, from that folder; a torchrun line as its rank 0), and the local
    packages they pip-install."""
    commands, packages = [], []
    for page in pages():
        with open(os.path.join(ROOT, page)) as f:
            found, installed = page_commands(page, f.read())
        commands += found
        packages += [p for p in installed if p not in packages]
    return commands, packages


def page_commands(page, text):
    commands, packages, cwd = [], [], "."
    lines = list(readme_lines(text))
    for number, line in lines:
        if line is None:
            cwd = "."
            continue
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            env = {}
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            if words[:1] == ["cd"]:
                cwd = os.path.normpath(os.path.join(cwd, words[1]))
            elif "pip" in words and "install" in words:  # a folder of the repository: a package to install
                packages += [os.path.normpath(os.path.join(cwd, word)) for word in words[words.index("install") + 1:]
                             if os.path.isdir(os.path.join(ROOT, cwd, word))]
            script = next((i for i, w in enumerate(words) if os.path.basename(w) in SCRIPTS), None)
            if script is None:
                continue
            launcher = " ".join(words[:script])
            if "torchrun" in launcher:
                processes = re.search(r"--nproc[_-]per[_-]node[= ](\d+)", launcher).group(1)
                env.update(WORLD_SIZE=processes, RANK="0", LOCAL_RANK="0")
            commands.append(Command(f"{page}:{number}", cwd, words[script:], env))
    return commands, packages


def help_example(script):
    """The example of `script -h`: the command line under its 'example' heading."""
    text = subprocess.run([sys.executable, script, "-h"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"), check=True).stdout
    line = re.search(r"^example.*:\n\s+(python3? .*)$", text, re.M).group(1)
    return Command(f"{script} -h", ".", shlex.split(line)[1:])


COMMANDS, PACKAGES = readme_commands()


def copy_repository(target):
    """The repository's files without what runs, builds and git leave."""
    def ignore(folder, names):
        return [n for n in names if n in SKIPPED or n.endswith(".egg-info")]
    shutil.copytree(ROOT, target, ignore=ignore)
    return str(target)


def snapshot(root):
    """Every path under `root` with its modification time: a file or folder written shows."""
    return {os.path.join(folder, name): os.lstat(os.path.join(folder, name)).st_mtime_ns
            for folder, folders, files in os.walk(root) for name in folders + files}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """(a copy of the repository, the folder the README's local packages are installed into)."""
    root = copy_repository(tmp_path_factory.mktemp("check") / "repository")
    site = str(tmp_path_factory.mktemp("site"))
    for package in PACKAGES:  # from a copy: building one writes into its folder
        source = shutil.copytree(os.path.join(ROOT, package), tmp_path_factory.mktemp("package") / "p")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", site, str(source)], check=True, capture_output=True)
    return root, site


def run_check(command, root, site):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", **command.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *command.argv, "--check"], cwd=os.path.join(root, command.cwd),
                          env=env, capture_output=True, text=True, timeout=600)


def test_the_readme_parser_finds_the_training_commands_a_torchrun_and_a_cd():
    assert {"train_teacher.py", "train_student.py"} <= {os.path.basename(c.argv[0]) for c in COMMANDS}
    assert any(c.env.get("WORLD_SIZE") for c in COMMANDS) and any(c.cwd != "." for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS + list(SCRIPTS),  # a script: the example of its -h
                         ids=lambda c: str(c) if isinstance(c, Command) else f"{c} -h")
def test_every_readme_and_help_command_passes_check_and_writes_nothing(command, repository):
    """Exit 0, or 1 where the only problems are files not found (CIFAR-100 is downloaded by the run;
    the teachers, ImageNet and the quick start's checkpoints are not there); a line that needs a GPU is
    refused on a machine without one, as its run is."""
    root, site = repository
    command = help_example(command) if isinstance(command, str) else command
    before = snapshot(root)
    done = run_check(command, root, site)
    assert snapshot(root) == before, f"{command} wrote into the repository"
    output = done.stdout + done.stderr
    if "cuda_graph" in command.argv and not torch.cuda.is_available():
        assert done.returncode == 2 and "cuda_graph needs one process on a CUDA device" in done.stderr, output
        return
    assert done.returncode in (0, 1) and "error:" not in done.stderr, output
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert bool(problems) == (done.returncode == 1), output
    assert all("not found" in line for line in problems), output
    assert re.search(r"^(model|student|checkpoint|models): ", done.stdout, re.M), output  # built, or why not


def student_config(synthetic_dir, teacher_file, save_folder, **extra):
    return dict(tiny_config(synthetic_dir, save_folder, model_s="resnet8", model_t="resnet14", path_t=teacher_file,
                            distill="crd", nce_k=64, beta=0.8), model="", **extra)


def test_everything_found_exits_0_with_counts_and_the_real_labels(synthetic_dir, teacher_file, tmp_path, write_cfg):
    folder = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(student_config(synthetic_dir, teacher_file, str(folder))),
                                "--check")
    assert code == 0, out + err
    assert "teacher:    resnet14: " in out and f"(from {teacher_file})" in out
    assert "student:    resnet8: 83,892 parameters" in out and "method:     crd: " in out
    assert f"{folder} (not there yet: the run creates it)" in out and "passed: the run would start" in out
    assert not folder.exists()
    # CRD meets the training set's labels, as its run does: 600 images leave no 16384 negatives
    code, out, err = run_script("train_student.py", write_cfg(student_config(synthetic_dir, teacher_file, str(folder),
                                                                               nce_k=16384)), "--check")
    assert code == 2 and "error:" in err and "nce_k" in err, out + err


def test_library_weights_not_in_the_local_cache_are_a_problem(synthetic_dir, tmp_path, write_cfg, monkeypatch):
    """torchvision:WEIGHTS absent from torch.hub's cache: a file to fetch (exit 1, its URL named), the
    teacher built with random weights; a weights tag the library lacks stays the run's error (2)."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub_home"))
    url = torchvision.models.get_model_weights("mobilenet_v3_small").IMAGENET1K_V1.url
    config = student_config(synthetic_dir, "torchvision:IMAGENET1K_V1", str(tmp_path / "run"),
                            model_t="torchvision:mobilenet_v3_small", distill="kd", beta=0)
    del config["nce_k"]
    cfg = write_cfg(config)
    code, out, err = run_script("train_student.py", cfg, "--check")
    assert code == 1, out + err
    assert re.search(r"^problem: +teacher: torchvision's .* not in the local cache: download " + re.escape(url), out, re.M)
    assert "torchvision:mobilenet_v3_small: " in out and "(random weights: path_t not found)" in out
    code, out, err = run_script("train_student.py", cfg, "path_t", "torchvision:NO_SUCH_WEIGHTS", "--check")
    assert code == 2 and "has no weights 'NO_SUCH_WEIGHTS'" in err, out + err
    assert not (tmp_path / "run").exists() and not (tmp_path / "hub_home").exists()


def test_a_finished_run_folder_is_a_problem_and_a_bad_key_the_runs_error(synthetic_dir, tmp_path, write_cfg):
    folder = tmp_path / "teacher"
    cfg = write_cfg(tiny_config(synthetic_dir, str(folder), epochs=1, lr_decay_epochs="1"))
    assert run_script("train_teacher.py", cfg)[0] == 0
    before = snapshot(str(tmp_path))
    code, out, err = run_script("train_teacher.py", cfg, "--check")
    assert code == 1 and re.search(r"^problem: +run folder: .*holds a finished run of 1 epochs", out, re.M), out + err
    code, out, err = run_script("train_teacher.py", cfg, "epochs", 2, "--check")
    assert code == 0 and "exists: the run resumes after epoch 1" in out, out + err
    code, out, err = run_script("train_teacher.py", cfg, "epochs", 2, "learning_rat", 1, "--check")
    assert code == 2 and err.count("\n") == 1 and "did you mean 'learning_rate'" in err, err
    assert snapshot(str(tmp_path)) == before


def test_missing_data_that_is_not_downloaded_is_a_problem(tmp_path, write_cfg):
    data = tmp_path / "cifar"
    cfg = write_cfg(dict(model="resnet8", epochs=1, lr_decay_epochs="1", data_dir=str(data), download=False,
                         save_folder=str(tmp_path / "run")))
    code, out, err = run_script("train_teacher.py", cfg, "--check")
    assert code == 1 and re.search(r"^problem: +data: cifar100: CIFAR-100 not found in .* download is off", out, re.M)
    code, out, err = run_script("train_teacher.py", cfg, "download", True, "--check")
    assert code == 0 and "the run downloads cifar-100-python.tar.gz" in out, out + err
    assert os.listdir(tmp_path) == ["cfg0.yaml"]


def test_the_evaluate_example_names_the_quick_starts_student_checkpoint():
    with open(os.path.join(ROOT, "configs", "quickstart", "student.yaml")) as f:
        student = yaml.safe_load(f)
    path = os.path.normpath(os.path.join(student["save_folder"], f"{student['model_s']}_best.pth"))
    assert help_example("evaluate.py").argv[1] == path
