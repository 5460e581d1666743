"""Tune every method with the same budget on a held-out split: one Optuna study per (method, pair).

    python tune.py --methods kd dkd --pairs resnet32x4_resnet8x4 --trials 20 --set val_split 0.1 epochs 240
    python tune.py --methods kd dkd --pairs resnet32x4_resnet8x4 --trials 20 --set val_split 0.1 --runs-per-gpu 4
    python tune.py --methods dkd --pairs resnet32x4_resnet8x4 --trials 20 --set val_split 0.1 --rerun 3

A study searches the method's declared knobs (their `space`), its loss weight and the
temperatures it reads (helper/tune.py says which) on its shipped config (configs/kds/<method>/<pair>.yaml,
or --configs DIR), with --set over it; each trial is a run folder <save_root>/<data set>/<pair>/<method>/
trial_<n>, chosen by its best top-1 on the val_split hold-out (refused without one: never the test
set), pruned by Optuna's median or Hyperband pruner on each evaluated epoch. Every method gets the same
budget, --trials finished trials of the same epochs. The studies live in --storage (an SQLite file,
.db, or Optuna's journal file, any other name): a killed tune.py run again goes on where it was, its
interrupted trial resumed from its run folder, and several workers share them (--runs-per-gpu K: K
local workers per GPU, or K on the CPU with the cores divided; --executor slurm: --jobs array tasks).
At the end each study's best.yaml (its config as base, the best values over it) and study.json;
--rerun N trains best.yaml with N seeds on the whole training set and prints their test top-1.
"""
import argparse
import os
import subprocess
import sys

from helper.cli import run_main

DEFAULT_STORAGE = "studies.db"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.strip().splitlines()[2:5]))
    p.add_argument("--methods", nargs="+", required=True, metavar="M", help="rows to tune: folders of configs/kds/ "
                   "(or of --configs)")
    p.add_argument("--pairs", nargs="+", required=True, metavar="PAIR", help="columns, e.g. resnet32x4_resnet8x4")
    p.add_argument("--configs", nargs="+", action="extend", default=[], metavar="DIR",
                   help="folders laid out as configs/ (kds/<method>/<pair>.yaml): a plugin's own configs")
    p.add_argument("--trials", type=int, default=20, help="finished trials per study: the budget (default 20)")
    p.add_argument("--storage", default=None, metavar="PATH",
                   help=f"the studies' file: SQLite (.db) or Optuna's journal file (default <save_root>/{DEFAULT_STORAGE})")
    p.add_argument("--save_root", default="save/tune", help="root of the studies' folders (default save/tune)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY VALUE", dest="overrides",
                   help="config overrides of every trial, e.g. --set val_split 0.1 epochs 60")
    p.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"),
                   help="Optuna's pruner on each evaluated epoch's validation top-1 (default median)")
    p.add_argument("--tune-common", nargs="+", default=[], metavar="KEY",
                   help="common keys searched too, from a tenth to ten times their value (learning_rate weight_decay)")
    p.add_argument("--rerun", type=int, default=0, metavar="N",
                   help="train each best.yaml with N seeds on the whole training set and report their test top-1")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--executor", default="local", choices=("local", "slurm"))
    p.add_argument("--runs-per-gpu", "--runs_per_gpu", type=int, default=1, metavar="K",
                   help="K workers share each GPU (on a CPU-only machine: K workers, the cores divided)")
    p.add_argument("--gpus", default=None, help="local: comma-separated GPU ids (default: every visible GPU)")
    p.add_argument("--jobs", type=int, default=1, help="slurm: array tasks working on the studies (default 1)")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--time", default="24:00:00", help="slurm: time limit of a task")
    p.add_argument("--cluster", default=None, choices=("slurm", "local", "debug"),
                   help="submitit backend (default: slurm when there is one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one worker process of a local pool
    args = p.parse_args(argv)
    if len(args.overrides) % 2:
        from common.errors import UserError
        raise UserError(f"--set takes KEY VALUE pairs; '{args.overrides[-1]}' has no value")
    args.storage = args.storage or os.path.join(args.save_root, DEFAULT_STORAGE)
    return args


def studies(args):
    """The Study of each (method, pair), every one checked, with one budget (equal epochs)."""
    from common.errors import UserError
    from helper.config import load_config
    from helper.grid import method_config
    from helper.tune import Study
    out = []
    for method in args.methods:
        for pair in args.pairs:
            path = method_config(method, pair, args.configs)
            if path is None:
                raise UserError(f"no config for method '{method}' on pair '{pair}' (kds/{method}/{pair}.yaml)")
            cfg = load_config(path, args.overrides, "student")
            name = f"{cfg.dataset}/{pair}/{method}"
            out.append(Study(name, path, args.overrides, os.path.join(args.save_root, name), args.storage,
                             args.trials, args.pruner, args.tune_common, args.seed))
    epochs = {s.name: s.cfg.epochs for s in out}
    if len(set(epochs.values())) > 1:
        raise UserError(f"every method of one comparison gets the same budget, but the configs train "
                        f"{', '.join(f'{n}: {e}' for n, e in epochs.items())} epochs: --set epochs N")
    return out


def work(args):
    """This process's share: trials of every study until each budget is reached."""
    for study in studies(args):
        study.work()


def launch_local(args):
    """Run the workers of this machine: one in this process, or K per GPU (K on the CPU) as processes."""
    import torch

    from helper import packing
    gpus = (args.gpus.split(",") if args.gpus else [str(i) for i in range(torch.cuda.device_count())])
    slots = [(gpu, k) for gpu in gpus for k in range(args.runs_per_gpu)] or \
            [(None, k) for k in range(args.runs_per_gpu)]
    if len(slots) == 1:
        return work(args)
    threads = packing.cpu_threads(len(slots)) if not gpus else None
    workers = []
    for gpu, _ in slots:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, os.path.abspath(__file__), *sys_argv(args), "--worker"]
        workers.append(subprocess.Popen(command, env=env))
    failed = [w.args for w in workers if w.wait() != 0]
    if failed:
        from common.errors import UserError
        raise UserError(f"{len(failed)} of {len(workers)} workers failed (their lines above say why)")


def sys_argv(args):
    """The command line of this run (a worker's own)."""
    return [a for a in args.argv if a != "--worker"]


def launch_slurm(args):
    """--jobs Slurm array tasks, each a worker of every study (submitit)."""
    try:
        import submitit
    except ImportError:
        from common.errors import UserError
        raise UserError("--executor slurm needs submitit: pip install submitit") from None
    executor = submitit.AutoExecutor(folder=os.path.join(args.save_root, "slurm_logs"), cluster=args.cluster)
    executor.update_parameters(timeout_min=_minutes(args.time), slurm_partition=args.partition,
                               slurm_array_parallelism=args.jobs)
    jobs = executor.map_array(lambda _: work(args), list(range(args.jobs)))
    print(f"submitted {len(jobs)} worker task(s): {jobs[0].job_id.split('_')[0]}", flush=True)
    for job in jobs:
        job.result()


def _minutes(text):
    parts = [int(p) for p in text.replace("-", ":").split(":")]
    days = parts.pop(0) if len(parts) == 4 else 0
    hours, minutes, _ = ([0] * (3 - len(parts)) + parts) if len(parts) < 3 else parts
    return days * 1440 + hours * 60 + minutes


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.worker:
        work(args)
        return 0
    chosen = studies(args)  # every study checked before any trial runs
    launch_slurm(args) if args.executor == "slurm" else launch_local(args)
    for study in chosen:
        budget = study.study.user_attrs["budget"]
        if not study.count(("COMPLETE",)):
            print(f"{study.name}: no trial completed ({study.count(('PRUNED',))} pruned of a budget of "
                  f"{budget['trials']} trials x {budget['epochs']} epochs): no best.yaml", flush=True)
            continue
        path = study.write_best()
        best = study.study.best_trial
        print(f"{study.name}: {study.count(('COMPLETE',))} complete, {study.count(('PRUNED',))} pruned of a budget of "
              f"{budget['trials']} trials x {budget['epochs']} epochs; best val top-1 {best.value:.2f} (trial "
              f"{best.number}: {best.params}) -> {path}", flush=True)
        if args.rerun:
            values, (mean, std, n, low, high) = study.rerun(args.rerun, path)
            spread = f" ± {std:.2f}, 95% CI {low:.2f} to {high:.2f}" if std is not None else ""
            print(f"{study.name}: best.yaml on the whole training set, {n} seeds: test top-1 {mean:.2f}{spread} "
                  f"({', '.join(f'{v:.2f}' for v in values)})", flush=True)
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
