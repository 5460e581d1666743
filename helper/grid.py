"""The grid of sweep.py and report.py (tables, pairs, method rows) and reading run folders.

* `paper()` is `configs/paper_results.json`; `paper_rows(data)` the method rows of its two tables.
* A method row is a folder `kds/<row>/` of shipped configs, one `<pair>.yaml` per pair: under
  `configs/` and under each folder of `roots` (a plugin's own config folder, `--configs`).
  `method_folders(roots)` finds every one, `method_config(row, pair, roots)` its file for a pair.
  Nothing here lists methods: a new method's folder is a new row.
* `row_of(config)` is what a config runs as a row of the tables: the method's class (resolved
  through the registry, so aliases meet: hint and fitnet are one), its knobs declared
  `variant` that leave their default (logit_stand, ctkd_over, sdd_base) and the optimizer when
  not sgd; `row_names(roots)` maps it to the folder that ships it.
* `pair_models(pair)` the (teacher, student) of a pair, read from its shipped configs;
  `vanilla_config(model, roots)` the student-alone config.
* `run_state(folder, epochs)` says whether a run folder is new, unfinished or finished
  (latest.pth `finished` and `epoch == epochs`) without loading any weights.
* `read_config(folder)` / `read_log(folder)` read `config.yaml` and the `epoch N key value ...`
  lines of `log.txt`.
"""
import functools
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
VANILLA = "vanilla"   # the vanilla-student row: the student trained alone (train_teacher.py)


def paper(path=PAPER_FILE):
    """The published figures: {'rule': ..., 'tables': {table: {pairs, teacher, student, methods}}, 'others'}."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise UserError(f"cannot read the paper's results {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    return data


def paper_rows(data):
    """The method rows of the paper's tables, in the paper's order (a row of either table)."""
    return list(dict.fromkeys(row for table in TABLES for row in data["tables"][table]["methods"]))


def paper_figure(table, row, pair):
    """The paper's top-1 of `row` (teacher, vanilla or a method) on `pair`, or None (N/A)."""
    spec = table
    if row == "teacher":
        return spec["teacher"].get(pair)
    if row == VANILLA:
        return spec["student"].get(pair)
    values = spec["methods"].get(row)
    return None if values is None else values[spec["pairs"].index(pair)]


# ----------------------------------------------------------------------------- method rows

@functools.lru_cache(maxsize=None)
def _folders(roots):
    found = {}
    for root in (CONFIGS, *roots):
        kds = os.path.join(root, "kds")
        if root != CONFIGS and not os.path.isdir(kds):
            raise UserError(f"--configs {root} holds no kds/ folder: give a folder laid out as configs/, "
                            f"with kds/<method>/<pair>.yaml")
        for name in sorted(os.listdir(kds)):
            folder = os.path.join(kds, name)
            if not os.path.isdir(folder) or not any(f.endswith(".yaml") for f in os.listdir(folder)):
                continue
            if name in found:
                raise UserError(f"method '{name}' ships configs in both {found[name]} and {folder}: rename one")
            found[name] = folder
    return found


def method_folders(roots=()):
    """{row: folder} of every `kds/<row>/` holding a config, under configs/ then each of `roots`."""
    return dict(_folders(tuple(os.path.abspath(r) for r in roots)))


def method_config(method, pair, roots=()):
    """The shipped config of `method` for `pair` (kds/<method>/<pair>.yaml), or None."""
    folder = method_folders(roots).get(method)
    path = folder and os.path.join(folder, f"{pair}.yaml")
    return path if path and os.path.isfile(path) else None


def vanilla_config(model, roots=()):
    """train_vanilla/<model>.yaml of the first root that has it (configs/ first)."""
    for root in (CONFIGS, *roots):
        path = os.path.join(root, "train_vanilla", f"{model}.yaml")
        if os.path.isfile(path):
            return path
    return os.path.join(CONFIGS, "train_vanilla", f"{model}.yaml")


def row_of(config):
    """(method, variants): what a config (a dict) runs as a row of the tables. method is the class
    of `distill` (its name when it does not resolve here: a plugin not installed); variants the
    (key, value) of its knobs declared `variant` that leave their default, then `optimizer dot`."""
    from common.knobs import declared_knobs
    from common.resolve import add_plugin_paths
    from distillers import method_class
    name = str(config.get("distill", ""))
    add_plugin_paths(config.get("plugin_path"))
    try:
        method = method_class(name)[0]
        knobs = declared_knobs(method).values()
    except UserError:
        method, knobs = name, ()
    variants = [(k.name, config[k.name]) for k in knobs if k.variant and config.get(k.name, k.default) != k.default]
    optimizer = str(config.get("optimizer", "sgd")).lower()  # DOT makes a row; AdamW is a recipe's, not a method's
    return method, tuple(variants) + ((("optimizer", optimizer),) if optimizer == "dot" else ())


def row_names(roots=()):
    """{row_of(config): row} over the shipped folders (each read from its first config)."""
    from .config import read_yaml
    names = {}
    for row, folder in method_folders(roots).items():
        first = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))[0]
        names.setdefault(row_of(read_yaml(os.path.join(folder, first))), row)
    return names


def row_name(config, names):
    """The row of a run's config: the folder that ships its method, else `distill` and its variants
    in words (a method with no shipped configs: `pkt optimizer dot`)."""
    key = row_of(config)
    if key in names:
        return names[key]
    return " ".join([str(config.get("distill", "?")), *(f"{k} {v}" for k, v in key[1])])


_PAIR_MODELS = {}


def pair_models(pair):
    """(model_t, model_s) of `pair`, read from the first shipped method config of it."""
    if pair not in _PAIR_MODELS:
        from .config import read_yaml
        for method in method_folders():
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
    validation top-1 (a run with val_split: the checkpoint it chose); ema_best, ema_last, ema_val the
    same of the EMA weights (model_ema). None when the log does not say."""
    ema = rule.startswith("ema_")
    rule, test, val = (rule[4:], "ema_test_acc", "ema_val_acc") if ema else (rule, "test_acc", "val_acc")
    if rule == "best":
        values = [f[test] for f in log.values() if test in f]
        values += [] if ema else [f["best_acc"] for f in log.values() if "best_acc" in f]
        return max(values) if values else None
    if rule == "val":
        scored = [(f[val], -epoch, f[test]) for epoch, f in log.items() if val in f and test in f]
        return max(scored)[2] if scored else None
    final = log.get(epochs)
    return None if final is None else final.get(test)
