"""The paper's grid (tables, pairs, methods) and reading run folders: shared by sweep.py and report.py.

* `paper()` is `configs/paper_results.json`; `pair_models(pair)` the (teacher, student) of a pair,
  read from its shipped configs; `method_config` / `vanilla_config` the shipped config files.
* `run_state(folder, epochs)` says whether a run folder is new, unfinished or finished
  (latest.pth `finished` and `epoch == epochs`) without loading any weights.
* `read_config(folder)` / `read_log(folder)` read `config.yaml` and the `epoch N key value ...`
  lines of `log.txt`.
"""
import json
import math
import os
import re

import yaml

from common.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
PAPER_FILE = os.path.join(CONFIGS, "paper_results.json")
TABLES = ("similar", "different")
METHODS = ("kd", "fitnet", "at", "fsp", "rkd", "cc", "sp", "crd", "ours")
VANILLA = "vanilla"   # the vanilla-student row: the student trained alone (train_teacher.py)
# config.yaml `distill` (lower-cased) -> the method key of the tables
DISTILL_TO_METHOD = {
    "kd": "kd", "hkd": "kd", "hint": "fitnet", "fitnet": "fitnet", "attention": "at", "at": "at",
    "similarity": "sp", "sp": "sp", "correlation": "cc", "cc": "cc", "rkd": "rkd", "fsp": "fsp",
    "crd": "crd", "askd": "ours", "ours": "ours",
}


def paper(path=PAPER_FILE):
    """The published figures: {'rule': ..., 'tables': {table: {pairs, teacher, student, methods}}}."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise UserError(f"cannot read the paper's results {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    return data


def paper_figure(table, row, pair):
    """The paper's top-1 of `row` (teacher, vanilla or a method) on `pair`, or None (N/A)."""
    spec = table
    if row == "teacher":
        return spec["teacher"].get(pair)
    if row == VANILLA:
        return spec["student"].get(pair)
    values = spec["methods"].get(row)
    return None if values is None else values[spec["pairs"].index(pair)]


def method_config(method, pair):
    """configs/kds/<method>/<pair>.yaml, or None when the method has no config for the pair."""
    path = os.path.join(CONFIGS, "kds", method, f"{pair}.yaml")
    return path if os.path.isfile(path) else None


def vanilla_config(model):
    return os.path.join(CONFIGS, "train_vanilla", f"{model}.yaml")


_PAIR_MODELS = {}


def pair_models(pair):
    """(model_t, model_s) of `pair`, read from the first shipped method config of it."""
    if pair not in _PAIR_MODELS:
        from .config import read_yaml
        for method in METHODS:
            path = method_config(method, pair)
            if path:
                data = read_yaml(path)
                _PAIR_MODELS[pair] = (data["model_t"], data["model_s"])
                break
        else:
            raise UserError(f"no config for pair '{pair}' under {os.path.join(CONFIGS, 'kds')}")
    return _PAIR_MODELS[pair]


# ----------------------------------------------------------------------------- run folders

def _load_latest(path):
    """latest.pth, memory-mapped (no weights are read), falling back to the checked loader."""
    import torch

    from .checkpoint import NUMPY_SAFE_GLOBALS, load_checkpoint
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return load_checkpoint(path)  # raises the UserError that says what is wrong


def diverged(folder):
    """The `diverged: ...` line the run's log.txt ends with when the run diverged (helper/trainer.py),
    or None."""
    try:
        with open(os.path.join(folder, "log.txt")) as f:
            lines = [line.strip() for line in f if line.startswith("diverged: ")]
    except OSError:
        return None
    return lines[-1] if lines else None


def run_state(folder, epochs=None):
    """(state, epoch, why) of the run folder: state is 'new' (no latest.pth), 'unfinished',
    'finished' (latest.pth finished and epoch == epochs; any epoch when `epochs` is None),
    'diverged' (its log says so: why is that line) or 'unreadable' (why says what is wrong with
    latest.pth)."""
    line = diverged(folder)
    if line is not None:
        return "diverged", 0, line
    path = os.path.join(folder, "latest.pth")
    if not os.path.exists(path):
        return "new", 0, "no latest.pth"
    try:
        state = _load_latest(path)
        finished, epoch = bool(state["finished"]), int(state["epoch"])
    except UserError as e:
        return "unreadable", 0, str(e)
    except (KeyError, TypeError, ValueError):
        return "unreadable", 0, f"{path} is not a latest.pth of train_teacher.py/train_student.py"
    target = epochs if epochs is not None else epoch
    if finished and epoch == target:
        return "finished", epoch, ""
    if finished:
        return "unfinished", epoch, f"finished at epoch {epoch}, configured for {target}"
    return "unfinished", epoch, f"stopped after epoch {epoch} of {target}"


def read_config(folder):
    """config.yaml of a run folder as a dict (one `{key: value}  # doc` mapping a line, or plain YAML)."""
    path = os.path.join(folder, "config.yaml")
    with open(path) as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
        if isinstance(data, dict):
            return data
    except yaml.YAMLError:
        pass
    data = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = yaml.safe_load(line)
        except yaml.YAMLError:
            item = None
        if not isinstance(item, dict):
            raise UserError(f"{path} line {number} is not a 'key: value' mapping: {line.strip()[:80]}")
        data.update(item)
    return data


_EPOCH_LINE = re.compile(r"^epoch (\d+) (.*)$")


def parse_log(text):
    """{epoch: {field: float}} from the `epoch N key value ...` lines; other lines are ignored.
    A repeated epoch (a re-run after a crash) keeps its last line."""
    epochs = {}
    for line in text.splitlines():
        match = _EPOCH_LINE.match(line.strip())
        if not match:
            continue
        tokens = match.group(2).split()
        fields = {}
        for key, value in zip(tokens[::2], tokens[1::2]):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                fields[key] = number
        if "test_acc" in fields:
            epochs[int(match.group(1))] = fields
    return dict(sorted(epochs.items()))


def read_log(folder):
    with open(os.path.join(folder, "log.txt"), errors="replace") as f:
        return parse_log(f.read())


def top1(log, rule, epochs):
    """The run's figure under `rule`: best = highest test top-1 of any epoch (and the best_acc the
    loop kept), last = test top-1 of epoch `epochs`, val = test top-1 of the first epoch of highest
    validation top-1 (a run with val_split: the checkpoint it chose). None when the log does not say."""
    if rule == "best":
        values = [f["test_acc"] for f in log.values()] + [f["best_acc"] for f in log.values() if "best_acc" in f]
        return max(values) if values else None
    if rule == "val":
        scored = [(f["val_acc"], -epoch, f["test_acc"]) for epoch, f in log.items() if "val_acc" in f]
        return max(scored)[2] if scored else None
    final = log.get(epochs)
    return None if final is None else final["test_acc"]
