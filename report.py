"""Rebuild the paper's two tables from run folders: mean ± std over seeds beside the published figure.

    python report.py save/                                  # markdown on stdout, rule best
    python report.py save/sweep --rule last --out report.md --plot curves.png

Every folder under ROOT holding config.yaml and log.txt is a run. Its cell comes from config.yaml:
(model_t, model_s, distill) for train_student.py runs, `model` for train_teacher.py runs (a
teacher of the tables gives a Teacher row, a student of the tables the vanilla-Student row).
A third table holds other methods' figures published elsewhere on the same pairs (`others` of
configs/paper_results.json: VID, PKT, AB, FT, NST from the CRD paper, DKD and KD+DOT from
mdistiller), with the runs of those methods beside them (`distill` their name, `optimizer dot`
adds `_dot`: KD with DOT is the row kd_dot). Only finished runs (latest.pth finished at the
configured epochs) are averaged; unfinished ones are listed apart. --rule best takes each run's best test top-1 over its epochs (what the paper
did), --rule last the top-1 after the final epoch (what the CRD repository reported), --rule val
the test top-1 at the epoch chosen on the held-out validation images (runs with val_split).
--plot writes the test-accuracy curves of each cell to a PNG (needs matplotlib).
"""
import argparse
import os
import statistics
import sys
from dataclasses import dataclass, field

from helper.cli import run_main
from common.errors import UserError
from helper.grid import (DISTILL_TO_METHOD, METHODS, PAPER_FILE, TABLES, VANILLA, diverged, pair_models, paper,
                         paper_figure, read_config, read_log, run_state, top1)

TITLES = {"similar": "Teacher and student of similar architectures",
          "different": "Teacher and student of different architectures"}
ROW_LABELS = {"teacher": "Teacher", VANILLA: "Student (vanilla)", "kd": "KD", "fitnet": "FitNet", "at": "AT",
              "fsp": "FSP", "rkd": "RKD", "cc": "CC", "sp": "SP", "crd": "CRD", "ours": "ASKD (ours)"}
# config `distill` names of the CRD repository for rows of the third table
OTHER_ALIASES = {"abound": "ab", "factor": "ft"}
RULES = {"best": "each run's best test top-1 over its epochs",
         "last": "each run's test top-1 after its final epoch",
         "val": "each run's test top-1 at its best epoch on the held-out validation images (val_split)"}


@dataclass
class RunInfo:
    folder: str
    config: dict = field(default_factory=dict)
    log: dict = field(default_factory=dict)
    cells: list = field(default_factory=list)   # [(table, row, pair)]
    value: float = None
    status: str = "ok"                          # ok, unfinished, diverged, other
    reason: str = ""

    @property
    def label(self):
        c = self.config
        if c.get("distill") == "vanilla" or (c.get("model") and not c.get("model_s")):
            return f"vanilla {c.get('model', '?')}"
        return f"{c.get('distill', '?')} {c.get('model_t', '?')} -> {c.get('model_s', '?')}"


# ----------------------------------------------------------------------------- reading runs

def find_runs(root):
    """Every folder under `root` (itself included) that holds config.yaml and log.txt, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "tensorboard")
        if "config.yaml" in files and "log.txt" in files:
            found.append(folder)
    return found


class Grid:
    """Which cells of the paper's tables a run's config belongs to. A method of the third table
    (`others`) has its cell under the table of its pair: (table, method, pair)."""

    def __init__(self, tables, others=None):
        self.tables = tables
        self.others = (others or {}).get("methods", {})
        self.by_models, self.teachers, self.students = {}, {}, {}
        for table in TABLES:
            for pair in tables[table]["pairs"]:
                model_t, model_s = pair_models(pair)
                self.by_models.setdefault((model_t, model_s), []).append((table, pair))
                self.teachers.setdefault(model_t, []).append((table, pair))
                self.students.setdefault(model_s, []).append((table, pair))

    def cells(self, config):
        """([(table, row, pair)], why not) for a run's config."""
        distill = str(config.get("distill", "")).lower()
        if distill == "vanilla" or (config.get("model") and not config.get("model_s")):
            model = config.get("model", "")
            cells = [(t, "teacher", p) for t, p in self.teachers.get(model, [])]
            cells += [(t, VANILLA, p) for t, p in self.students.get(model, [])]
            return cells, ("" if cells else f"model {model or '?'} is neither a teacher nor a student of the tables")
        method = DISTILL_TO_METHOD.get(distill) or OTHER_ALIASES.get(distill, distill)
        variants = [(suffix, words) for suffix, words, on in (
            ("_dkd", " over dkd", config.get("ctkd_over") == "dkd"),
            ("_ls", " with logit_stand", config.get("logit_stand") is True),
            ("_dot", " with optimizer dot", str(config.get("optimizer", "sgd")).lower() == "dot"),
            (f"_{config.get('sdd_base')}", f" over {config.get('sdd_base')}", distill == "sdd")) if on]
        method += "".join(suffix for suffix, _ in variants)
        if method not in METHODS and method not in self.others:
            return [], f"method '{distill}'{''.join(w for _, w in variants)} is not a row of the tables"
        pairs = self.by_models.get((config.get("model_t"), config.get("model_s")), [])
        if not pairs:
            return [], f"pair {config.get('model_t')} -> {config.get('model_s')} is not in the tables"
        return [(t, method, p) for t, p in pairs], ""


def load_run(folder, grid, rule):
    run = RunInfo(folder)
    try:
        run.config = read_config(folder)
        run.log = read_log(folder)
    except (OSError, UserError) as e:
        run.status, run.reason = "other", f"unreadable: {e}"
        return run
    line = diverged(folder)  # whatever its cell: a diverged run is never a result
    if line:
        run.status, run.reason = "diverged", line[len("diverged: "):]
        return run
    run.cells, why = grid.cells(run.config)
    if not run.cells:
        run.status, run.reason = "other", why
        return run
    try:
        epochs = int(run.config.get("epochs"))
    except (TypeError, ValueError):
        run.status, run.reason = "other", "config.yaml has no valid 'epochs'"
        return run
    state, done, why = run_state(folder, epochs)
    if state != "finished":
        logged = max(run.log, default=0)
        run.status = "unfinished"
        run.reason = f"epoch {max(done, logged)} of {epochs}" + (f" ({why})" if state == "unreadable" else "")
        return run
    run.value = top1(run.log, rule, epochs)
    if run.value is None:
        run.status, run.reason = "other", (
            "log.txt has no val_acc: the run held out no validation images (val_split 0)" if rule == "val"
            else f"log.txt has no test_acc for epoch {epochs} (needed by --rule {rule})")
    return run


# ----------------------------------------------------------------------------- the tables

def summarize(values):
    """(mean, sample std or None, n)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None), len(values)


def format_cell(values, published):
    text = []
    if values:
        mean, std, n = summarize(values)
        text.append(f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" (n={n})")
    if published is None:
        return "; ".join(text + ["paper N/A"]) if values else "N/A"
    text.append(f"paper {published:.2f}")
    if values:
        text.append(f"Δ {round(mean, 2) - published:+.2f}")
    return "; ".join(text)


def collect(runs):
    """{(table, row, pair): [finished runs]}."""
    cells = {}
    for run in runs:
        if run.status == "ok":
            for cell in run.cells:
                cells.setdefault(cell, []).append(run)
    return cells


def render(root, runs, data, rule, dataset):
    tables, cells = data["tables"], collect(runs)
    ok = [r for r in runs if r.status == "ok"]
    unfinished = [r for r in runs if r.status == "unfinished"]
    gone = [r for r in runs if r.status == "diverged"]
    other = [r for r in runs if r.status == "other"]
    paper_rule = data.get("rule", "best")
    lines = [
        "# ASKD reproduction: CIFAR-100 top-1 (%)", "",
        f"Runs under `{root}`: {len(runs)} found, {len(ok)} finished and averaged, "
        f"{len(unfinished)} unfinished (not averaged), {len(gone)} diverged (not averaged), "
        f"{len(other)} not in the tables or unreadable.", "",
        f"Rule: **{rule}** ({RULES[rule]}). The paper's figures use the rule **{paper_rule}** "
        f"(the ASKD code kept the best test epoch; the CRD repository reported the last epoch).", "",
    ]
    if dataset and dataset != "cifar100":
        lines += [f"Dataset: **{dataset}**: these runs are not on CIFAR-100, so the differences to the "
                  f"paper say nothing about the reproduction.", ""]
    lines += ["Each cell: mean ± sample standard deviation over the finished runs (n = their number; "
              "usually one per seed); the paper's figure; Δ = mean − paper. "
              "Teacher rows without runs show the paper's figure only.", ""]
    notes = []
    for table in TABLES:
        spec = tables[table]
        pairs = spec["pairs"]
        rows = ["teacher", VANILLA] + [m for m in METHODS if m in spec["methods"]]
        header = [f"{p} ({' → '.join(pair_models(p))})" for p in pairs]
        lines += [f"## {TITLES.get(table, table)}", "",
                  "| | " + " | ".join(header) + " |", "|---|" + "---|" * len(pairs)]
        for row in rows:
            texts = []
            for pair in pairs:
                members = cells.get((table, row, pair), [])
                texts.append(format_cell([r.value for r in members], paper_figure(spec, row, pair)))
                notes += cell_notes(table, row, pair, members)
            lines.append(f"| {ROW_LABELS.get(row, row)} | " + " | ".join(texts) + " |")
        lines.append("")
    if data.get("others"):
        lines += render_others(data["others"], tables, cells, notes)
    if unfinished:
        lines += ["## Unfinished runs (not averaged)", "", "| run folder | run | progress |", "|---|---|---|"]
        lines += [f"| `{r.folder}` | {r.label} | {r.reason} |" for r in unfinished]
        lines.append("")
    if gone:
        lines += ["## Diverged runs (not averaged)", "", "| run folder | run | what its log says |", "|---|---|---|"]
        lines += [f"| `{r.folder}` | {r.label} | {r.reason} |" for r in gone]
        lines.append("")
    if other:
        lines += ["## Runs left out", "", "| run folder | why |", "|---|---|"]
        lines += [f"| `{r.folder}` | {r.reason} |" for r in other]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    return "\n".join(lines)


def table_of(tables, pair):
    return next(t for t in TABLES if pair in tables[t]["pairs"])


def render_others(others, tables, cells, notes):
    """The third table: other methods' published figures on the paper's pairs, runs beside them."""
    pairs = [p for t in TABLES for p in tables[t]["pairs"]]
    lines = ["## Other methods, published elsewhere", "",
             "Not in the ASKD paper: figures of other papers on the same pairs (their teachers and vanilla "
             "students differ slightly from the ASKD paper's); N/A where none is published.", "",
             "| | " + " | ".join(f"{p} ({' → '.join(pair_models(p))})" for p in pairs) + " |",
             "|---|" + "---|" * len(pairs)]
    for row, spec in others["methods"].items():
        texts = []
        for pair in pairs:
            table = table_of(tables, pair)
            members = cells.get((table, row, pair), [])
            texts.append(format_cell([r.value for r in members], spec["figures"].get(pair)))
            notes += cell_notes(table, spec["label"], pair, members)
        lines.append(f"| {spec['label']} [{spec['source']}] | " + " | ".join(texts) + " |")
    lines += [""] + [f"- [{key}] {text}" for key, text in others["sources"].items()]
    lines += [f"- {note}" for note in others.get("notes", [])] + [""]
    return lines


def cell_notes(table, row, pair, members):
    notes = []
    epochs = sorted({r.config.get("epochs") for r in members}, key=str)
    if len(epochs) > 1:
        notes.append(f"{table} {ROW_LABELS.get(row, row)} on {pair}: runs of {', '.join(map(str, epochs))} "
                     f"epochs averaged together")
    seeds = [r.config.get("seed") for r in members]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
    if repeated:
        notes.append(f"{table} {ROW_LABELS.get(row, row)} on {pair}: seed(s) {', '.join(map(str, repeated))} "
                     f"counted more than once")
    return notes


# ----------------------------------------------------------------------------- the figure

def plot(runs, path, labels=ROW_LABELS):
    """Test top-1 per epoch, one panel per (table, pair), one line per row: mean over runs ± std.
    `labels`: row key -> legend label (the rows of the third table included)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cells = collect(runs)
    panels = [(t, p) for t in TABLES for p in dict.fromkeys(p for (tt, _, p) in cells if tt == t)]
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    order = ["teacher", VANILLA, *METHODS]
    order += sorted({row for _, row, _ in cells} - set(order))
    for ax, (table, pair) in zip(axes.flat, panels):
        for row in order:
            members = cells.get((table, row, pair))
            if not members:
                continue
            epochs = sorted({e for r in members for e in r.log})
            per_epoch = [[r.log[e]["test_acc"] for r in members if e in r.log] for e in epochs]
            mean = [statistics.fmean(v) for v in per_epoch]
            line, = ax.plot(epochs, mean, marker="." if len(epochs) < 30 else None,
                            label=f"{labels.get(row, row)} (n={len(members)})")
            if len(members) > 1:
                std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch]
                ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"{pair} ({table})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UserError(f"cannot write the figure {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return True


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.strip().splitlines()[2:4]))
    p.add_argument("root", help="folder searched for run folders (config.yaml + log.txt)")
    p.add_argument("--rule", default="best", choices=tuple(RULES),
                   help="best: best test epoch of each run (as the paper); last: final epoch; val: the test top-1 "
                        "at each run's best validation epoch (runs with val_split) (default: best)")
    p.add_argument("--out", default=None, help="write the markdown here (default: stdout)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the test-accuracy curves here")
    p.add_argument("--dataset", default=None, help="only runs on this dataset (needed when ROOT mixes several)")
    p.add_argument("--paper", default=PAPER_FILE, help="the published figures (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    if not os.path.isdir(args.root):
        raise UserError(f"{args.root} is not a folder: give the folder holding the run folders (e.g. save/)")
    data = paper(args.paper)
    grid = Grid(data["tables"], data.get("others"))
    runs = [load_run(folder, grid, args.rule) for folder in find_runs(args.root)]
    datasets = {}
    for run in runs:
        if run.config:
            datasets.setdefault(run.config.get("dataset", "cifar100"), []).append(run)
    if args.dataset:
        runs = [r for r in runs if not r.config or r.config.get("dataset", "cifar100") == args.dataset]
        dataset = args.dataset
    elif len(datasets) > 1:
        counts = ", ".join(f"{d}: {len(r)}" for d, r in sorted(datasets.items()))
        raise UserError(f"{args.root} holds runs on several datasets ({counts}): pick one with --dataset")
    else:
        dataset = next(iter(datasets), None)
    text = render(args.root, runs, data, args.rule, dataset)
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text)
        except OSError as e:
            raise UserError(f"cannot write {args.out}: {e.strerror or e}") from None
        print(f"wrote {args.out} ({sum(r.status == 'ok' for r in runs)} finished runs)")
    else:
        print(text)
    if args.plot:
        labels = {**ROW_LABELS, **{k: v["label"] for k, v in data.get("others", {}).get("methods", {}).items()}}
        if plot(runs, args.plot, labels):
            print(f"wrote {args.plot}")
        else:
            print(f"warning: no finished run to plot; {args.plot} not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
