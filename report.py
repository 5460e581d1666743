"""Rebuild the paper's two tables from run folders: mean ± std over seeds beside the published figure.

    python report.py save/                                  # markdown on stdout, rule best
    python report.py save/sweep --rule last --out report.md --plot curves.png
    python report.py save/quickstart                        # the quick start's three runs side by side

Every folder under ROOT holding config.yaml and log.txt is a run, placed by its data set,
teacher, student and method (config.yaml): (model_t, model_s, distill) for train_student.py runs,
`model` for train_teacher.py runs (a teacher of a pair gives its Teacher row, a student its
vanilla-Student row). A method's row is the folder that ships its configs (configs/kds/<row>/,
or a plugin's folder given with --configs): aliases meet (hint is fitnet), and a knob declared
`variant` off its default, or `optimizer dot`, is a row of its own (kd_ls, ctkd_dkd, sdd_dkd,
kd_dot); a method that ships no configs gets a row named by its `distill`. CIFAR-100 runs on the
paper's pairs fill its two tables (its nine methods) and a third one (every other method, beside
the figures of `others` in configs/paper_results.json where published); runs on another data set
or pair fill a table of their own per data set. Only finished runs (latest.pth finished at the
configured epochs) are averaged; unfinished ones are listed apart. --rule best takes each run's best test top-1 over its epochs (what the paper
did), --rule last the top-1 after the final epoch (what the CRD repository reported), --rule val
the test top-1 at the epoch chosen on the held-out validation images (runs with val_split), and
--rule ema_best, ema_last, ema_val the same of the runs' EMA weights (model_ema).
--plot writes the test-accuracy curves of each cell to a PNG (needs matplotlib).
"""
import argparse
import os
import statistics
import sys
from dataclasses import dataclass, field

from helper.cli import run_main
from common.errors import UserError
from helper.grid import (PAPER_FILE, TABLES, VANILLA, diverged, method_folders, pair_models, paper, paper_figure,
                         paper_rows, read_config, read_log, row_name, row_names, run_state, top1)
from helper.stats import compare, describe, interval

TITLES = {"similar": "Teacher and student of similar architectures",
          "different": "Teacher and student of different architectures"}
ROW_LABELS = {"teacher": "Teacher", VANILLA: "Student (vanilla)", "kd": "KD", "fitnet": "FitNet", "at": "AT",
              "fsp": "FSP", "rkd": "RKD", "cc": "CC", "sp": "SP", "crd": "CRD", "ours": "ASKD (ours)"}
PAPER_DATASET = "cifar100"
RULES = {"best": "each run's best test top-1 over its epochs",
         "last": "each run's test top-1 after its final epoch",
         "val": "each run's test top-1 at its best epoch on the held-out validation images (val_split)",
         "ema_best": "each run's best test top-1 of its EMA weights (model_ema) over its epochs",
         "ema_last": "each run's test top-1 of its EMA weights after its final epoch",
         "ema_val": "each run's EMA test top-1 at the EMA's best epoch on the held-out validation images"}


@dataclass
class RunInfo:
    folder: str
    config: dict = field(default_factory=dict)
    log: dict = field(default_factory=dict)
    cells: list = field(default_factory=list)   # [(table, row, column)]
    value: float = None
    status: str = "ok"                          # ok, unfinished, diverged, other
    reason: str = ""

    @property
    def vanilla(self):
        c = self.config
        return c.get("distill") == "vanilla" or bool(c.get("model") and not c.get("model_s"))

    @property
    def dataset(self):
        """The data set as the tables head it (an ImageFolder tree by its folder)."""
        name = str(self.config.get("dataset", PAPER_DATASET))
        if name == "imagefolder":
            return f"imagefolder {os.path.basename(os.path.normpath(str(self.config.get('data_dir', ''))))}"
        return name

    @property
    def label(self):
        c = self.config
        if self.vanilla:
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
    """Where runs go: the cells (table, row, column) of the paper's two tables and of the third
    (column: a pair of the paper), and of one table per other data set (table `dataset:<name>`,
    column `teacher → student`, or the model of a vanilla run that meets no pair there)."""

    def __init__(self, data, roots=()):
        self.tables = data["tables"]
        self.others = data.get("others", {}).get("methods", {})
        self.names = row_names(roots)
        self.rows = [*paper_rows(data), *self.others, *method_folders(roots)]
        self.by_models, self.teachers, self.students = {}, {}, {}
        for table in TABLES:
            for pair in self.tables[table]["pairs"]:
                model_t, model_s = pair_models(pair)
                self.by_models.setdefault((model_t, model_s), []).append((table, pair))
                self.teachers.setdefault(model_t, []).append((table, pair))
                self.students.setdefault(model_s, []).append((table, pair))

    def row(self, run):
        return VANILLA if run.vanilla else row_name(run.config, self.names)

    def paper_cells(self, run):
        """The run's cells in the paper's tables and the third one (CIFAR-100 runs on its pairs)."""
        if run.dataset != PAPER_DATASET:
            return []
        c = self.config_models(run)
        if run.vanilla:
            return ([(t, "teacher", p) for t, p in self.teachers.get(c, [])]
                    + [(t, VANILLA, p) for t, p in self.students.get(c, [])])
        row = self.row(run)
        return [(t, row, p) for t, p in self.by_models.get(c, [])]

    @staticmethod
    def config_models(run):
        c = run.config
        return c.get("model", "") if run.vanilla else (c.get("model_t"), c.get("model_s"))

    def place(self, runs):
        """Set each finished run's cells; a run that meets no cell of the paper goes to its data
        set's own table, where vanilla runs join the pairs of the distilled runs beside them."""
        done = [r for r in runs if r.status == "ok"]
        for run in done:
            run.cells = self.paper_cells(run)
        pairs = {}
        for run in done:
            if not run.vanilla and not run.cells:
                model_t, model_s = self.config_models(run)
                column = f"{model_t} → {model_s}"
                pairs.setdefault(run.dataset, {})[column] = (model_t, model_s)
                run.cells = [(f"dataset:{run.dataset}", self.row(run), column)]
        for run in done:
            if run.vanilla:
                model, own = self.config_models(run), pairs.get(run.dataset, {})
                table = f"dataset:{run.dataset}"
                extra = [(table, "teacher", col) for col, (t, _) in own.items() if t == model]
                extra += [(table, VANILLA, col) for col, (_, s) in own.items() if s == model]
                if not extra and not run.cells:
                    extra = [(table, VANILLA, model)]
                run.cells += extra

    def order(self, rows):
        """`rows` in the order of the tables: teacher, vanilla, the paper's, the others', the rest."""
        known = ["teacher", VANILLA, *self.rows]
        return [r for r in dict.fromkeys(known) if r in rows] + sorted(set(rows) - set(known))


def load_run(folder, rule):
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
            "log.txt has no ema_test_acc: the run kept no EMA of its weights (model_ema false)"
            if rule.startswith("ema_") and not any("ema_test_acc" in f for f in run.log.values()) else
            "log.txt has no val_acc: the run held out no validation images (val_split 0)" if rule.endswith("val")
            else f"log.txt has no test_acc for epoch {epochs} (needed by --rule {rule})")
    return run


# ----------------------------------------------------------------------------- the tables

def format_values(values):
    mean, std, n, low, high = interval(values)
    ci = f"; 95% CI {low:.2f} to {high:.2f}" if low is not None else ""
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" (n={n}{ci})"


def format_cell(values, published):
    text = [format_values(values)] if values else []
    if published is None:
        return "; ".join(text + ["paper N/A"]) if values else "N/A"
    text.append(f"paper {published:.2f}")
    if values:
        text.append(f"Δ {round(statistics.fmean(values), 2) - published:+.2f}")
    return "; ".join(text)


def collect(runs):
    """{(table, row, column): [finished runs]}."""
    cells = {}
    for run in runs:
        if run.status == "ok":
            for cell in run.cells:
                cells.setdefault(cell, []).append(run)
    return cells


def render(root, runs, data, rule, grid):
    tables, cells = data["tables"], collect(runs)
    ok = [r for r in runs if r.status == "ok"]
    unfinished = [r for r in runs if r.status == "unfinished"]
    gone = [r for r in runs if r.status == "diverged"]
    other = [r for r in runs if r.status == "other"]
    datasets = list(dict.fromkeys(t.split(":", 1)[1] for t, _, _ in cells if t.startswith("dataset:")))
    in_paper = any(t in TABLES for t, _, _ in cells)
    paper_rule = data.get("rule", "best")
    show_paper = in_paper or not datasets
    lines = [
        "# ASKD reproduction: CIFAR-100 top-1 (%)" if show_paper else f"# Top-1 (%) of the runs under `{root}`", "",
        f"Runs under `{root}`: {len(runs)} found, {len(ok)} finished and averaged, "
        f"{len(unfinished)} unfinished (not averaged), {len(gone)} diverged (not averaged), "
        f"{len(other)} unreadable or left out.", "",
        f"Rule: **{rule}** ({RULES[rule]})." + (
            f" The paper's figures use the rule **{paper_rule}** (the ASKD code kept the best test epoch; the "
            f"CRD repository reported the last epoch)." if show_paper else ""), "",
        "Each cell: mean ± sample standard deviation over the finished runs (n = their number; usually one per "
        "seed)" + ("; the paper's figure; Δ = mean − paper. Teacher rows without runs show the paper's figure only."
                   if show_paper else "."), ""]
    notes = []
    if show_paper:
        for table in TABLES:
            spec = tables[table]
            pairs = spec["pairs"]
            rows = ["teacher", VANILLA] + [m for m in paper_rows(data) if m in spec["methods"]]
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
        lines += render_others(data, grid, cells, notes)
    else:
        lines += ["No run is on CIFAR-100 with a pair of the paper: its tables are left out "
                  "(`report.py` on an empty folder shows them).", ""]
    for name in datasets:
        lines += render_dataset(name, grid, cells, notes)
    lines += render_comparisons(cells)
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


def row_label(row, others):
    spec = others.get(row)
    return f"{spec['label']} [{spec['source']}]" if spec else ROW_LABELS.get(row, row)


def render_others(data, grid, cells, notes):
    """The third table: every method outside the paper's nine on its pairs, other papers' figures
    beside the runs (N/A where none is published)."""
    tables, others = data["tables"], data.get("others", {})
    figures = others.get("methods", {})
    pairs = [p for t in TABLES for p in tables[t]["pairs"]]
    paper = set(paper_rows(data))
    strays = {row for t, row, _ in cells if t in TABLES and row not in tables[t]["methods"]} - {"teacher", VANILLA}
    rows = grid.order({r for r in grid.rows if r not in paper} | strays)
    lines = ["## Other methods, published elsewhere", "",
             "Not in the ASKD paper: every other method that ships configs or has runs here, with figures of "
             "other papers on the same pairs (their teachers and vanilla students differ slightly from the "
             "ASKD paper's); N/A where none is published.", "",
             "| | " + " | ".join(f"{p} ({' → '.join(pair_models(p))})" for p in pairs) + " |",
             "|---|" + "---|" * len(pairs)]
    for row in rows:
        texts = []
        for pair in pairs:
            table = table_of(tables, pair)
            members = [] if row in tables[table]["methods"] else cells.get((table, row, pair), [])
            texts.append(format_cell([r.value for r in members], figures.get(row, {}).get("figures", {}).get(pair)))
            notes += cell_notes(table, row_label(row, figures), pair, members)
        lines.append(f"| {row_label(row, figures)} | " + " | ".join(texts) + " |")
    lines += [""] + [f"- [{key}] {text}" for key, text in others.get("sources", {}).items()]
    lines += [f"- {note}" for note in others.get("notes", [])] + [""]
    return lines


def render_dataset(name, grid, cells, notes):
    """A table of the runs on data set `name` outside the paper's: no published figure."""
    table = f"dataset:{name}"
    columns = list(dict.fromkeys(col for t, _, col in cells if t == table))
    rows = grid.order({row for t, row, _ in cells if t == table})
    others = grid.others
    lines = [f"## {name}: runs outside the paper's tables", "",
             f"Data set **{name}**; columns: teacher → student (a model trained alone with no pair beside it: "
             f"its own column). No published figure.", "",
             "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in rows:
        texts = []
        for column in columns:
            members = cells.get((table, row, column), [])
            texts.append(format_values([r.value for r in members]) if members else "")
            notes += cell_notes(name, row_label(row, others), column, members)
        lines.append(f"| {row_label(row, others)} | " + " | ".join(texts) + " |")
    return lines + [""]


BASELINES = (("kd", "KD"), (VANILLA, "the student alone"))


def render_comparisons(cells):
    """Each method against KD and against the student alone in the same column: the difference of
    the means, its 95% interval and Welch's t-test (helper/stats.py); no test below 3 runs a side."""
    lines = []
    for (table, row, column), members in sorted(cells.items()):
        if row in ("teacher", VANILLA):
            continue
        texts = []
        for baseline, label in BASELINES:
            others = cells.get((table, baseline, column), [])
            if others and baseline != row:
                texts.append(describe(compare([r.value for r in members], [r.value for r in others]), label))
        if texts:
            lines.append(f"| {table.split(':', 1)[-1]} | {column} | {ROW_LABELS.get(row, row)} | {'; '.join(texts)} |")
    if not lines:
        return []
    return ["## Against KD and the student alone", "",
            "The difference of each method's mean from KD's and from the student alone's in the same column, its "
            "95% interval (Welch's standard error and degrees of freedom) and the two-sided p-value of Welch's t-test "
            "(scipy.stats.ttest_ind, equal_var=False); below 3 finished runs on either side no test is made.", "",
            "| table | column | method | difference |", "|---|---|---|---|", *lines, ""]


SIDE_BY_SIDE = ("best", "last", "val")


def render_rules(cells):
    """Each cell under the rules best, last and val (mean ± std, n of the runs the rule reads)."""
    lines = ["## Rules side by side", "",
             "Each cell's finished runs read under each rule: best (the best test epoch: the test set chooses), "
             "last (the final epoch), val (the test top-1 at the best epoch on held-out training images: runs "
             "with val_split).", "", "| table | column | method | " + " | ".join(SIDE_BY_SIDE) + " |",
             "|---|---|---|" + "---|" * len(SIDE_BY_SIDE)]
    for (table, row, column), members in sorted(cells.items()):
        texts = []
        for rule in SIDE_BY_SIDE:
            values = [v for v in (top1(r.log, rule, int(r.config["epochs"])) for r in members) if v is not None]
            texts.append(format_values(values) if values else "-")
        label = ROW_LABELS.get(row, row)
        lines.append(f"| {table.split(':', 1)[-1]} | {column} | {label} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def cell_notes(table, row, column, members):
    notes = []
    epochs = sorted({r.config.get("epochs") for r in members}, key=str)
    if len(epochs) > 1:
        notes.append(f"{table} {ROW_LABELS.get(row, row)} on {column}: runs of {', '.join(map(str, epochs))} "
                     f"epochs averaged together")
    seeds = [r.config.get("seed") for r in members]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
    if repeated:
        notes.append(f"{table} {ROW_LABELS.get(row, row)} on {column}: seed(s) {', '.join(map(str, repeated))} "
                     f"counted more than once")
    return notes


# ----------------------------------------------------------------------------- the figure

def panel_title(table, column):
    """What a panel shows: the data set, the teacher and the student (and the paper's table)."""
    if table in TABLES:
        return f"CIFAR-100: {' → '.join(pair_models(column))} ({table} architectures)"
    return f"{table.split(':', 1)[1]}: {column}"


def plot(runs, path, grid, labels):
    """Test top-1 per epoch, one panel per (table, column), one line per row: mean over runs ± std.
    `labels`: row key -> legend label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cells = collect(runs)
    panels = list(dict.fromkeys((t, c) for t, _, c in cells))
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    order = grid.order({row for _, row, _ in cells})
    for ax, (table, column) in zip(axes.flat, panels):
        for row in order:
            members = cells.get((table, row, column))
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
        ax.set_title(panel_title(table, column), fontsize=9)
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
                                epilog="\n".join(__doc__.strip().splitlines()[2:5]))
    p.add_argument("root", help="folder searched for run folders (config.yaml + log.txt)")
    p.add_argument("--rule", default="best", choices=tuple(RULES),
                   help="best: best test epoch of each run (as the paper); last: final epoch; val: the test top-1 "
                        "at each run's best validation epoch (runs with val_split); ema_best, ema_last, ema_val: "
                        "the same of the EMA weights (runs with model_ema) (default: best)")
    p.add_argument("--rules", action="store_true",
                   help="add each cell under the rules best, last and val side by side (the difference most "
                        "often mistaken: a paper's best test epoch against another's last)")
    p.add_argument("--out", default=None, help="write the markdown here (default: stdout)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the test-accuracy curves here")
    p.add_argument("--dataset", default=None, help="only runs on this data set (default: every one, each in its tables)")
    p.add_argument("--configs", nargs="+", action="extend", default=[], metavar="DIR",
                   help="folders laid out as configs/ (kds/<method>/<pair>.yaml) whose methods are rows too: "
                        "a plugin's own configs")
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
    grid = Grid(data, args.configs)
    runs = [load_run(folder, args.rule) for folder in find_runs(args.root)]
    if args.dataset:
        runs = [r for r in runs if not r.config or r.dataset == args.dataset]
    grid.place(runs)
    text = render(args.root, runs, data, args.rule, grid)
    if args.rules:
        text += render_rules(collect(runs))
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
        labels = {**ROW_LABELS, **{k: v["label"] for k, v in grid.others.items()}}
        if plot(runs, args.plot, grid, labels):
            print(f"wrote {args.plot}")
        else:
            print(f"warning: no finished run to plot; {args.plot} not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
