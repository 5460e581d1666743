"""Run the paper's tables as a sweep: every (method, pair, seed) of the grid as its own run.

    python sweep.py --table similar --methods kd ours dkd vanilla --seeds 3 --executor local
    python sweep.py --table all --seeds 3 --executor slurm --partition gpu --time 24:00:00
    python sweep.py --pairs res110_res20 --methods kd --seeds 2 --dry-run --set epochs 1 lr_decay_epochs 1
    python sweep.py --table all --seeds 3 --runs-per-gpu 4 --set fast True amp bf16 cuda_graph True

The rows are the paper's nine methods and vanilla by default; `--methods` takes any folder of
configs/kds/ (every method that ships configs: dkd, reviewkd, kd_ls, ...), a plugin's own
(`--configs DIR`, laid out as configs/), or `all`. A run is one shipped config
(configs/kds/<method>/<pair>.yaml, or for the `vanilla` row configs/train_vanilla/<student>.yaml
through train_teacher.py) with `seed <s>`, its own
save_folder `<save_root>/<table>/<method>/<pair or student>/seed_<s>` and the `--set` overrides.
Finished runs (latest.pth finished at the configured epochs) are skipped; interrupted ones are
launched again and resume by themselves. `--executor local` runs one process per visible GPU
(or `--jobs` at once; one after the other on a CPU-only machine); `--executor slurm` submits one
submitit job array (`--wait` to wait for it and report failures). Exit status 1 if a run failed.
`--runs-per-gpu K` packs K runs (K processes) on each GPU, with CUDA MPS when available, after
checking that K of them fit in its memory; on Slurm one array task runs K runs on its GPU; on a
CPU-only machine K runs go at once with the cores divided (why processes, how memory is
estimated: helper/packing.py).
"""
import argparse
import concurrent.futures
import difflib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

from helper import packing
from helper.cli import run_main
from common.errors import UserError
from helper.grid import (ROOT, TABLES, VANILLA, diverged, method_config, method_folders, pair_models, paper,
                         paper_rows, run_state, vanilla_config)

SWEEP_SETS = ("seed", "save_folder")  # keys the sweep sets for every run itself
OUTPUT = "stdout.txt"  # the console output of a local run, appended in its run folder


class Interrupted(UserError):
    exit_code = 130


@dataclass
class Run:
    name: str            # <table>/<method>/<pair or student>/seed_<s>
    method: str
    script: str          # train_student.py or train_teacher.py
    cfg_path: str
    overrides: list
    folder: str = ""     # the run folder (from the effective config)
    epochs: int = 0
    path_t: str = ""
    state: str = "new"   # new, unfinished, finished, unreadable
    done_epochs: int = 0
    result: dict = field(default_factory=dict)
    cfg: object = None   # the effective config

    @property
    def command(self):
        return [sys.executable, os.path.join(ROOT, self.script), "-cfg", self.cfg_path,
                *map(str, self.overrides)]

    def shell(self):
        return " ".join(_quote(a) for a in [os.path.basename(sys.executable)] + self.command[1:])


def _quote(arg):
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


# ----------------------------------------------------------------------------- arguments

def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.strip().splitlines()[2:5]))
    p.add_argument("--table", default="all", choices=(*TABLES, "all"), help="which table (default: all)")
    p.add_argument("--methods", nargs="+", default=None, metavar="M",
                   help=f"rows to run: {' '.join(rows(paper()))} (the folders of configs/kds/), those of --configs, "
                        f"or all (default: the paper's nine and vanilla)")
    p.add_argument("--configs", nargs="+", action="extend", default=[], metavar="DIR",
                   help="folders laid out as configs/ (kds/<method>/<pair>.yaml, train_vanilla/) whose methods "
                        "are rows too: a plugin's own configs")
    p.add_argument("--pairs", nargs="+", default=None, metavar="PAIR",
                   help="columns to run, e.g. resnet32x4_resnet8x4 (default: every pair of the table); a pair "
                        "outside the paper's tables that ships configs (swin_t_resnet18: OFA-KD's) runs under other/")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per cell (default: 3)")
    p.add_argument("--executor", default="local", choices=("local", "slurm"), help="default: local")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the runs and their state; launch nothing")
    p.add_argument("--save_root", default=os.path.join("save", "sweep"),
                   help="root of the run folders (default: save/sweep)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY VALUE",
                   help="config overrides applied to every run, e.g. --set epochs 1 lr_decay_epochs 1")
    p.add_argument("--teacher_dir", default=None,
                   help="folder holding <model_t>_vanilla.pth (default: the configs' path_t)")
    local = p.add_argument_group("local executor")
    local.add_argument("--gpus", default=None,
                       help="comma-separated GPU ids to use (default: every visible GPU)")
    local.add_argument("--jobs", type=int, default=None,
                       help="runs at once (default: one per GPU; 1 without GPU)")
    p.add_argument("--runs-per-gpu", "--runs_per_gpu", dest="runs_per_gpu", type=int, default=1, metavar="K",
                   help="K runs share each GPU (K processes, with CUDA MPS when available; refused when K "
                        "would not fit in its memory); without a GPU, K runs at once, cores divided (default: 1)")
    slurm = p.add_argument_group("slurm executor (submitit)")
    slurm.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--time", default="24:00:00", help="time limit per run: minutes or [D-]HH:MM:SS")
    slurm.add_argument("--gpus_per_node", type=int, default=1, help="GPUs per run (default: 1)")
    slurm.add_argument("--cpus_per_task", type=int, default=None, help="CPUs per run (default: the cluster's)")
    slurm.add_argument("--array_parallelism", type=int, default=None, help="runs of the array at once")
    slurm.add_argument("--slurm_log_dir", default=None, help="submitit's folder (default: <save_root>/slurm_logs)")
    slurm.add_argument("--wait", action="store_true", help="wait for the jobs; report and exit 1 on failure")
    slurm.add_argument("--max_requeues", type=int, default=3,
                       help="requeues of a run after Slurm's preemption or time-limit warning: the run saves its "
                            "step and resumes from it (default: 3)")
    slurm.add_argument("--cluster", default="slurm", choices=("slurm", "local", "debug"),
                       help="submitit backend: slurm, or local/debug to try the path without Slurm")
    p.add_argument("--group", default=None, help=argparse.SUPPRESS)  # inside a Slurm task: its K runs
    args = p.parse_args(argv)
    if len(args.overrides) % 2:
        raise UserError(f"--set takes KEY VALUE pairs; '{args.overrides[-1]}' has no value")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu must be at least 1, got {args.runs_per_gpu}")
    if args.runs_per_gpu > 1 and args.jobs is not None:
        raise UserError("give --jobs or --runs-per-gpu, not both: --runs-per-gpu K runs K per GPU at once")
    keys = args.overrides[::2]
    for key in SWEEP_SETS:
        if key in keys:
            raise UserError(f"--set {key} is chosen by the sweep for every run; use --seeds / --save_root")
    if args.teacher_dir and "path_t" in keys:
        raise UserError("give either --teacher_dir or --set path_t, not both")
    args.timeout_min = timeout_minutes(args.time)
    return args


def _unknown(kind, name, valid):
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"unknown {kind} '{name}'{hint}; valid: {', '.join(valid)}")


# ----------------------------------------------------------------------------- the grid

def plan(args):
    """The runs of the grid selected by `args`, in table order, each checked by loading its config."""
    data = paper()
    tables = TABLES if args.table == "all" else (args.table,)
    valid_methods = rows(data, args.configs)
    methods = valid_methods if args.methods == ["all"] else args.methods or [*paper_rows(data), VANILLA]
    for m in methods:
        if m not in valid_methods:
            raise _unknown("method", m, [*valid_methods, "all"])
    data = dict(data["tables"])
    all_pairs = [p for t in tables for p in data[t]["pairs"]]
    shipped = shipped_pairs(valid_methods, args.configs)
    extra = [p for p in args.pairs or () if p not in all_pairs and p in shipped and
             not any(p in data[t]["pairs"] for t in TABLES)]
    if extra:  # pairs outside the paper's tables with shipped configs (OFA-KD's Swin-T -> ResNet18)
        data[OTHER] = {"pairs": extra}
        tables = (*tables, OTHER)
    for p in args.pairs or ():
        if p not in all_pairs and p not in extra:
            other = [t for t in TABLES if p in data[t]["pairs"]]
            if other:
                raise UserError(f"pair '{p}' is in the '{other[0]}' table, not in --table {args.table}")
            raise _unknown("pair", p, [*all_pairs, *sorted(set(shipped) - set(all_pairs))])
    runs, names, notes = [], set(), []
    for table in tables:
        pairs = [p for p in data[table]["pairs"] if not args.pairs or p in args.pairs]
        for method in (m for m in valid_methods if m in methods):
            for pair in pairs:
                if method == VANILLA:
                    model = pair_models(pair)[1]
                    cfg_path, script, cell = vanilla_config(model, args.configs), "train_teacher.py", model
                    if not os.path.isfile(cfg_path):
                        notes.append((method, model))
                        continue
                else:
                    cfg_path, script, cell = method_config(method, pair, args.configs), "train_student.py", pair
                    if cfg_path is None:
                        notes.append((method, pair))
                        continue
                for seed in range(args.seeds):
                    name = f"{table}/{method}/{cell}/seed_{seed}"
                    if name in names:  # one vanilla run per student model
                        continue
                    names.add(name)
                    overrides = list(args.overrides) + ["seed", seed, "save_folder",
                                                        os.path.join(args.save_root, name)]
                    if args.teacher_dir and script == "train_student.py":
                        overrides += ["path_t", os.path.join(args.teacher_dir, f"{pair_models(pair)[0]}_vanilla.pth")]
                    runs.append(Run(name, method, script, cfg_path, overrides))
    if not runs:
        raise UserError("the selection holds no run: check --table, --methods and --pairs")
    for method in dict.fromkeys(m for m, _ in notes):
        pairs = ", ".join(p for m, p in notes if m == method)
        print(f"note: {method} has no config for {pairs}: left out")
    for run in runs:
        resolve(run)
    return runs


OTHER = "other"  # the runs' folder for pairs outside the paper's tables


def shipped_pairs(methods, roots=()):
    """Every pair some method of `methods` ships a config for (kds/<method>/<pair>.yaml)."""
    folders = method_folders(roots)
    return sorted({f[:-len(".yaml")] for m in methods if m in folders for f in os.listdir(folders[m])
                   if f.endswith(".yaml")})


def rows(data, roots=()):
    """Every row a sweep can run: the paper's methods, then every other folder of shipped configs
    (configs/kds/ and `roots`), then vanilla."""
    return list(dict.fromkeys([*paper_rows(data), *method_folders(roots), VANILLA]))


def resolve(run):
    """Load the run's effective config (errors name the run): its folder, epochs and teacher."""
    from helper.config import load_config
    from helper.run import run_path
    kind = "teacher" if run.script == "train_teacher.py" else "student"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = load_config(run.cfg_path, [str(o) for o in run.overrides], kind)
    except UserError as e:
        raise UserError(f"{run.name}: {e}") from None
    run.cfg, run.folder, run.epochs = cfg, run_path(cfg, kind), cfg.epochs
    run.path_t = cfg.path_t if kind == "student" else ""
    run.state, run.done_epochs, _ = run_state(run.folder, run.epochs)


def visible_gpus(spec=None):
    """GPU ids for CUDA_VISIBLE_DEVICES: `spec` ('0,1'), else the visible ones."""
    if spec:
        return [g.strip() for g in spec.split(",") if g.strip()]
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def prepare_data(runs):
    """Write / download each data set the runs use once, before runs that share it start at once."""
    import dataset
    seen = set()
    for run in runs:
        cfg = run.cfg
        key = (cfg.dataset, os.path.abspath(cfg.data_dir), cfg.synthetic_train_size, cfg.synthetic_test_size,
               cfg.synthetic_seed, cfg.synthetic_noise)
        if key not in seen:
            seen.add(key)
            dataset.prepare_data(cfg)


# ----------------------------------------------------------------------------- local executor

def last_error_line(text):
    """The line that says why a run failed: its last `error: ...` (a UserError of the scripts),
    else its last `SomeError: ...` line (an exception), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [m.group(1) for m in (re.search(r"(?:^|: )(error: .*)", line) for line in lines) if m]
    if errors:
        return errors[-1]
    raised = [line for line in lines if re.match(r"[\w.]*(Error|Exception|Interrupt|Exit)\b.*:", line)]
    return (raised or lines or ["(no output)"])[-1]


def run_one(run, gpu=None, stop=None, env=None):
    """Run one training process (`env`: extra environment); its console output is appended to
    <run folder>/stdout.txt."""
    if stop is not None and stop.is_set():
        return {"rc": None, "line": "not started (interrupted)", "seconds": 0.0}
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    os.makedirs(run.folder, exist_ok=True)
    output = os.path.join(run.folder, OUTPUT)
    start = time.time()
    with open(output, "ab") as f:
        offset = f.tell()
        f.write(f"$ {run.shell()}\n".encode())
        f.flush()
        rc = subprocess.call(run.command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env)
    line = ""
    if rc != 0:
        with open(output, "rb") as f:
            f.seek(offset)
            line = last_error_line(f.read().decode(errors="replace"))
    return {"rc": rc, "line": line, "seconds": time.time() - start, "output": output}


def launch_local(runs, gpus, jobs, env=None):
    slots = queue.Queue()
    for i in range(jobs):
        slots.put(gpus[i % len(gpus)] if gpus else None)
    stop, lock, finished = threading.Event(), threading.Lock(), [0]

    def work(run):
        gpu = slots.get()
        try:
            result = run_one(run, gpu, stop, env)
        finally:
            slots.put(gpu)
        with lock:
            finished[0] += 1
            where = f" on GPU {gpu}" if gpu is not None else ""
            if result["rc"] == 0:
                print(f"[{finished[0]}/{len(runs)}] done {run.name}{where} ({result['seconds']:.1f} s)", flush=True)
            elif result["rc"] is not None:
                print(f"[{finished[0]}/{len(runs)}] FAILED {run.name}{where}: {result['line']}", flush=True)
        run.result = result

    where = f"{len(gpus)} GPU(s) ({','.join(gpus)})" if gpus else "the CPU"
    if env and "OMP_NUM_THREADS" in env:
        where += f" ({env['OMP_NUM_THREADS']} thread(s) each)"
    print(f"launching {len(runs)} run(s) on {where}, {jobs} at a time; output in <run folder>/{OUTPUT}",
          flush=True)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(work, run) for run in runs]
        for future in concurrent.futures.as_completed(futures):
            future.result()
    except KeyboardInterrupt:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)  # the running ones got the SIGINT and save
        raise Interrupted("interrupted: run the same command again to resume the unfinished runs") from None
    pool.shutdown(wait=True)


# ----------------------------------------------------------------------------- packing

def probe_peak(run, gpu, scratch):
    """(peak bytes, what) of one epoch of `run` alone on `gpu`, in a folder under `scratch` removed after."""
    folder = os.path.join(scratch, ".probe", run.name)
    shutil.rmtree(folder, ignore_errors=True)
    probe = Run(run.name, run.method, run.script, run.cfg_path,
                run.overrides + ["save_folder", folder, "epochs", 1, "lr_decay_epochs", 1, "init_epochs", 1,
                                 "tensorboard", False], folder=folder)
    print(f"packing: measuring one run's peak memory: {run.name}, one epoch alone on GPU {gpu}", flush=True)
    result = run_one(probe, gpu)
    peak, _ = packing.recorded_peak(root for root, _, files in os.walk(folder) if packing.PEAK_MEMORY in files)
    shutil.rmtree(folder, ignore_errors=True)
    if peak is None:
        raise UserError(f"--runs-per-gpu: the memory probe ({run.name}, one epoch) failed: "
                        f"{result['line'] or 'it recorded no peak memory'}")
    return peak, f"one epoch of {run.name}"


def check_packing(runs, todo, gpus, k, scratch):
    """Refuse K runs per GPU when K of the largest measured run would not fit in a GPU's free memory."""
    peak, folder = packing.recorded_peak(run.folder for run in runs)
    what = f"recorded in {folder}" if folder else ""
    if peak is None:
        peak, what = probe_peak(todo[0], gpus[0], scratch)
    for gpu, free in packing.free_memory(gpus).items():
        packing.check_fit(k, peak, free, f"GPU {gpu}")
    print(f"packing: {k} runs per GPU, each up to {peak / packing.GIB:.2f} GiB ({what})", flush=True)


def launch_packed(todo, runs, gpus, k, scratch):
    """--runs-per-gpu K on this machine: K runs per GPU under MPS, or K CPU runs at once with the
    cores divided. `scratch`: where the memory probe and MPS's pipes go."""
    if not gpus:
        threads = packing.cpu_threads(k)
        env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(threads)}
        launch_local(todo, gpus, k, env)
        return
    check_packing(runs, todo, gpus, k, scratch)
    with packing.MPS(os.path.join(scratch, ".mps")) as mps:
        print(f"packing: {mps.note}", flush=True)
        launch_local(todo, gpus, k * len(gpus), mps.env)


# ----------------------------------------------------------------------------- slurm executor

def timeout_minutes(text):
    """'90' -> 90, '24:00:00' -> 1440, '1-12:00:00' -> 2160, '30:00' (MM:SS) -> 30."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UserError(f"--time must be minutes or [D-]HH:MM:SS, got '{text}'")
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if b is None:           # M, or D-H
        minutes = a * 60 if days is not None else a
    elif c is None:         # M:S, or D-H:M
        minutes = a * 60 + b if days is not None else a + (b > 0)
    else:                   # H:M:S
        minutes = a * 60 + b + (c > 0)
    minutes += (days or 0) * 24 * 60
    if minutes < 1:
        raise UserError(f"--time must be at least a minute, got '{text}'")
    return minutes


def check_slurm(args):
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError("--executor slurm needs submitit: pip install submitit") from None
    if args.cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UserError("sbatch/srun not found: --executor slurm needs a Slurm cluster (use --executor local here)")


def launch_slurm(runs, args):
    import submitit

    from helper.requeue import RequeuedCommand
    folder = args.slurm_log_dir or os.path.join(args.save_root, "slurm_logs")
    executor = submitit.AutoExecutor(folder=folder, cluster=args.cluster)
    params = dict(name="askd-sweep", timeout_min=args.timeout_min, gpus_per_node=args.gpus_per_node,
                  cpus_per_task=args.cpus_per_task, slurm_partition=args.partition,
                  slurm_array_parallelism=args.array_parallelism)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    cwd = os.getcwd()
    groups = [[run] for run in runs]
    if args.runs_per_gpu > 1:  # one task runs K runs per GPU of its node: `sweep.py --group FILE`
        size = args.runs_per_gpu * args.gpus_per_node
        groups = [runs[i:i + size] for i in range(0, len(runs), size)]
        commands = [write_group(group, os.path.join(folder, "groups", f"group_{i}.json"), args.runs_per_gpu)
                    for i, group in enumerate(groups)]
    else:
        commands = [run.command for run in runs]
    with executor.batch():
        jobs = [executor.submit(RequeuedCommand(command, cwd, args.max_requeues)) for command in commands]
    per_task = f" in {len(jobs)} task(s) of up to {len(groups[0])}" if len(groups) < len(runs) else ""
    print(f"submitted {len(runs)} run(s){per_task} as job array {jobs[0].job_id.split('_')[0]} "
          f"(submitit folder {folder})", flush=True)
    if not (args.wait or args.cluster != "slurm"):
        print("not waiting: run the same command again later to see what finished "
              "(finished runs are skipped, interrupted ones resubmitted)")
        return False
    i = 0
    for group, job in zip(groups, jobs):
        try:
            error = job.exception()
        except Exception as e:  # noqa: BLE001 - the job never completed (cancelled, node failure...)
            error = e
        for run in group:  # a task of several runs may fail for some of them only
            i += 1
            if error is None or (len(group) > 1 and run_state(run.folder, run.epochs)[0] == "finished"):
                run.result = {"rc": 0, "line": ""}
                print(f"[{i}/{len(runs)}] done {run.name} (job {job.job_id})", flush=True)
            else:
                text = str(error)
                mine = [line for line in text.splitlines() if line.startswith(f"failed: {run.name}: ")]
                line = mine[-1][len(f"failed: {run.name}: "):] if mine else last_error_line(text)
                run.result = {"rc": 1, "line": line, "output": str(job.paths.stderr).replace("%t", "0")}
                print(f"[{i}/{len(runs)}] FAILED {run.name} (job {job.job_id}): {line}", flush=True)
    return True


def write_group(runs, path, k):
    """The file of one Slurm task's runs, and the command that runs them there."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fields = [{"name": r.name, "method": r.method, "script": r.script, "cfg_path": r.cfg_path,
               "overrides": [str(o) for o in r.overrides]} for r in runs]
    with open(path, "w") as f:
        json.dump(fields, f, indent=1)
    return [sys.executable, os.path.join(ROOT, "sweep.py"), "--group", os.path.abspath(path),
            "--runs-per-gpu", str(k)]


def run_group(args):
    """Inside a Slurm task: its runs, K per GPU of the node (MPS, memory check), as the local executor."""
    try:
        with open(args.group) as f:
            runs = [Run(**fields) for fields in json.load(f)]
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot read the task's runs {args.group}: {e}") from None
    for run in runs:
        resolve(run)
    todo = [r for r in runs if r.state != "finished"]
    if todo:
        launch_packed(todo, runs, visible_gpus(), args.runs_per_gpu, os.path.splitext(args.group)[0])
    failed = [r for r in todo if r.result.get("rc") != 0]
    for run in failed:  # on stderr: what submitit reports of a failed task
        print(f"failed: {run.name}: {run.result.get('line', 'not run')}", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    if args.group:
        return run_group(args)
    runs = plan(args)
    todo = [r for r in runs if r.state not in ("finished", "diverged")]
    gone = [r for r in runs if r.state == "diverged"]
    skipped = len(runs) - len(todo) - len(gone)
    resumes = [r for r in todo if r.state == "unfinished"]
    missing = sorted({r.path_t for r in todo if r.path_t and not os.path.isfile(r.path_t)})
    if args.dry_run:
        for run in runs:
            state = {"new": "launch", "unfinished": f"resume (after epoch {run.done_epochs})",
                     "finished": "skip (finished)", "unreadable": "launch (latest.pth unreadable)",
                     "diverged": "skip (diverged: see its log.txt)"}[run.state]
            print(f"{state:30s} {run.name}\n    {run.shell()}")
        for path in missing:
            print(f"warning: teacher checkpoint {path} is missing")
        print(f"dry run: {len(runs)} run(s): {len(todo)} to launch ({len(resumes)} resumed), "
              f"{skipped} skipped (finished), {len(gone)} diverged (not retried)")
        return 0
    if missing:
        names = " ".join(sorted({os.path.basename(p)[:-len("_vanilla.pth")] for p in missing}))
        raise UserError(f"teacher checkpoint(s) missing: {', '.join(missing)}; fetch them with "
                        f"`python fetch_teachers.py {names}` or point --teacher_dir at their folder")
    for run in gone:
        print(f"diverged: {run.name}: not retried (name a new trial to run it again): "
              f"{diverged(run.folder)[len('diverged: '):]}")
    if not todo:
        print(f"sweep: {len(runs)} run(s): {'all finished' if not gone else 'none to launch'}, nothing to launch")
        return 1 if gone else 0
    if args.executor == "slurm":
        check_slurm(args)
    prepare_data(todo)
    waited = True
    if args.executor == "local":
        gpus = visible_gpus(args.gpus)
        if args.runs_per_gpu > 1:
            launch_packed(todo, runs, gpus, args.runs_per_gpu, args.save_root)
        else:
            launch_local(todo, gpus, args.jobs or max(1, len(gpus)))
    else:
        waited = launch_slurm(todo, args)
    if not waited:
        print(f"sweep: {len(runs)} run(s): {len(todo)} submitted ({len(resumes)} resumed), "
              f"{skipped} skipped (finished)")
        return 0
    failed = [r for r in todo if r.result.get("rc") != 0]
    newly = [r for r in failed if diverged(r.folder)]
    print(f"sweep: {len(runs)} run(s): {len(todo)} launched ({len(resumes)} resumed), "
          f"{skipped} skipped (finished), {len(failed)} failed ({len(newly) + len(gone)} diverged)")
    for run in failed:
        where = f" (output: {run.result['output']})" if run.result.get("output") else ""
        kind = "diverged" if run in newly else "failed"
        print(f"{kind}: {run.name}: {run.result.get('line', 'not run')}{where}")
    return 1 if failed or gone else 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
