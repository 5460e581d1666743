"""Speed of the plain path (PIL DataLoader, fp32) against the fast path (DeviceLoader, fp32 and
bf16 autocast; on CUDA also the whole step as a CUDA graph, with and without channels_last),
measured in one process and written into BENCHMARKS.md.

    python bench/benchmark.py [--device cpu|cuda] [--quick] [--steps N] [--repeats R] [--warmup W]
                              [--cases NAME,...] [--modes NAME,...] [--workers N] [--threads N]
                              [--no-write]

    python bench/benchmark.py --device cpu --quick      # the CPU table of BENCHMARKS.md
    python bench/benchmark.py --device cuda             # a GPU's table
    python bench/benchmark.py --device cuda --packing 1,2,4,8   # K runs at once on one GPU
    python bench/benchmark.py --teacher-cache           # cached teacher logits beside the teacher's forward

What it measures, on a CIFAR-100-sized synthetic training set (50000 images, 100 classes,
written in CIFAR-100's format to a temporary folder and read by the project's own readers, so
CRD's memory bank and the epoch have the real size):
1. the data pipeline alone: the plain DataLoader (PIL transforms per image; 0 workers, and
   --workers workers) against the batched DeviceLoader, images/s;
2. for each case (CASES: teacher training, KD, ASKD x4, CRD, KD to wrn_16_2) and each mode (MODES):
   whole training steps as the loop runs them (next batch, to the device, autocast forward,
   backward, SGD step, or the replay of their CUDA graph; the plain path reads the loss every
   step, the fast path does not), images/s as
   the median (and the best) over `repeats` blocks of `steps` steps after `warmup` steps, peak
   memory, and the projected wall time of 240 epochs of 50000 images (training steps only: no
   evaluation).
`--quick` on a CPU: 1 warm-up step and 3 one-step blocks per path (2 cores: about 2 minutes
idle, 9 when other jobs load the machine).

3. the targets of the speed issue, judged on the medians (on CUDA each on the fastest fast mode).

`--packing 1,2,4,8` measures instead what `sweep.py --runs-per-gpu K` does: K processes (under
CUDA MPS when `nvidia-cuda-mps-control` exists, as the sweep; on a CPU with the cores divided),
each an ASKD resnet32x4 -> resnet8x4 run (PACKING_MODE: the fast path with the CUDA graph, bf16
and channels_last; fast fp32 on a CPU) that builds, warms up, waits for the others, then times
`steps` steps. Aggregate images/s = all the runs' images / (last end - first start), and the
projected wall time of the paper's two tables with 3 seeds (the runs counted from configs/ and
configs/paper_results.json) on 1 and 8 such devices, each run costed as this ASKD run (training
steps only). It writes its own section of BENCHMARKS.md.

`--teacher-cache` measures instead KD and DKD (resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2) on
the fast path (CUDA: graphed, bf16, channels_last) with the teacher's forward beside the same
with the teacher cache (helper/teacher_cache.py; `tiled_cache` says how its table is made), the
cache's build rate and size, and the projected wall time of the tables' logit rows with and
without it. Its own section of BENCHMARKS.md.

Configs are the paper's YAML files (configs/...) loaded by helper.config.load_config with the
data/path/precision keys overridden; models come from models.model_dict with random weights
(speed does not depend on them); distillers from distillers.build; the step is the loop's own
`Trainer.train_step`. The results replace this device's section of BENCHMARKS.md (other
devices' sections are kept).
"""
import argparse
import contextlib
import ctypes
import datetime
import gc
import multiprocessing
import queue
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import dataset  # noqa: E402
import distillers  # noqa: E402
from dataset.device_loader import build_fast_loaders, combinations  # noqa: E402
from common.errors import UserError  # noqa: E402
from dataset.synthetic import write_synthetic_cifar100  # noqa: E402
from helper import packing  # noqa: E402
from helper.config import load_config  # noqa: E402
from helper.grid import TABLES, method_config, pair_models, paper, paper_rows  # noqa: E402
from helper.session import Session, check_method  # noqa: E402
from helper.trainer import Trainer  # noqa: E402
from models import model_dict  # noqa: E402

TRAIN_SIZE, EPOCHS = 50000, 240
MARKDOWN = os.path.join(ROOT, "BENCHMARKS.md")

# name, YAML, script, extra overrides, what it is
CASES = [
    ("teacher", "configs/train_vanilla/resnet32x4.yaml", "teacher", ["distill", "vanilla"],
     "teacher training: resnet32x4, cross-entropy (distiller vanilla)"),
    ("kd", "configs/kds/kd/resnet32x4_resnet8x4.yaml", "student", [],
     "KD: resnet32x4 -> resnet8x4"),
    ("askd_shufflev2", "configs/kds/ours/res32x4_shufflenetv2.yaml", "student", [],
     "ASKD: resnet32x4 -> ShuffleV2"),
    ("askd_resnet8x4", "configs/kds/ours/resnet32x4_resnet8x4.yaml", "student", [],
     "ASKD: resnet32x4 -> resnet8x4"),
    ("crd", "configs/kds/crd/resnet32x4_resnet8x4.yaml", "student", [],
     "CRD: resnet32x4 -> resnet8x4, nce_k 16384, memory 2 x 50000 x 128"),
    ("kd_wrn16_2", "configs/kds/kd/wrn-40-2_wrn-16-2.yaml", "student", [],
     "KD: wrn_40_2 -> wrn_16_2"),
    # grouped and depthwise convolutions: does channels_last help them too?
    ("askd_shufflev1", "configs/kds/ours/res32x4_shufflenetv1.yaml", "student", [],
     "ASKD: resnet32x4 -> ShuffleV1"),
    ("askd_mobilenetv2", "configs/kds/ours/vgg13_mobilenetv2.yaml", "student", [],
     "ASKD: vgg13 -> MobileNetV2"),
]
# with KD on both pairs, the teacher cache's cases (--teacher-cache); not in the default set
CASES.append(("dkd_wrn16_2", "configs/kds/dkd/wrn-40-2_wrn-16-2.yaml", "student", [], "DKD: wrn_40_2 -> wrn_16_2"))
# the methods that reuse or reshape the classifier (--cases srd,catkd,sdd_kd,simkd); not in the default set
CLASSIFIER_CASES = [(m, f"configs/kds/{m}/resnet32x4_resnet8x4.yaml", "student", [], f"{label}: resnet32x4 -> resnet8x4")
                    for m, label in (("srd", "SRD"), ("catkd", "CAT-KD"), ("sdd_kd", "SD-KD"), ("simkd", "SimKD"))]
CASES += CLASSIFIER_CASES
# the logit methods of 2022-2025 papers, beside KD on the same pair (--cases logit); not in the default set
LOGIT_CASES = [(m, f"configs/kds/{m}/resnet32x4_resnet8x4.yaml", "student", [], f"{label}: resnet32x4 -> resnet8x4")
               for m, label in (("dkd", "DKD"), ("dist", "DIST"), ("ctkd", "CTKD"), ("nkd", "NKD"), ("ttm", "TTM"),
                                ("wttm", "WTTM"), ("rld", "RLD"), ("luminet", "LumiNet"), ("kd_ls", "KD+LS"),
                                ("mlkd", "MLKD (two views, plain path only)"))]
DEFAULT_CASES = [c[0] for c in CASES if c[0] != "dkd_wrn16_2" and c not in CLASSIFIER_CASES]
CASES += LOGIT_CASES
# key: (path, precision, label, overrides); the modes measured by default on each device
MODES = {
    "plain": ("plain", "fp32", "plain", {}),
    "fast": ("fast", "fp32", "fast", {}),
    "bf16": ("fast", "bf16", "fast", {"amp": "bf16"}),
    "graph": ("fast", "bf16", "fast + CUDA graph", {"amp": "bf16", "cuda_graph": True}),
    "graph_cl": ("fast", "bf16", "fast + CUDA graph + channels_last",
                 {"amp": "bf16", "cuda_graph": True, "channels_last": True}),
    "graph_cl_compile": ("fast", "bf16", "fast + CUDA graph + channels_last + compile",
                         {"amp": "bf16", "cuda_graph": True, "channels_last": True, "compile": True}),
    # the teacher's logits gathered from the teacher cache instead of its forward (--teacher-cache)
    "cached": ("fast", "fp32", "fast + teacher cache", {"teacher_cache": True}),
    "graph_cl_cached": ("fast", "bf16", "fast + CUDA graph + channels_last + teacher cache",
                        {"amp": "bf16", "cuda_graph": True, "channels_last": True, "teacher_cache": True}),
}
# --teacher-cache: these cases, each uncached beside cached
CACHE_CASES = ("kd", "dkd", "kd_wrn16_2", "dkd_wrn16_2", "crd")  # CRD: the logits and the embedding
CACHE_MODES = {"cpu": ["fast", "cached"], "cuda": ["graph_cl", "graph_cl_cached"]}
CACHE_SAMPLE = {"cpu": 16, "cuda": 2000}  # images whose 162 views the timed cache build computes
DEFAULT_MODES = {"cpu": ["plain", "fast", "bf16"],
                 "cuda": ["plain", "fast", "bf16", "graph", "graph_cl", "graph_cl_compile"]}


# -- machine ------------------------------------------------------------------------------------
def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Memory a setup adds at its peak (build + warm-up steps), over what was in use at `start`.
    CUDA: torch.cuda.max_memory_allocated since `start` minus memory_allocated at `start`
    (tensors only, caching-allocator slack not counted). CPU: the process's
    peak resident set (VmHWM) since `start`, which resets it through /proc/self/clear_refs,
    minus the resident set at `start`; where that reset is refused, ru_maxrss minus its value
    at `start` (a lower bound: 0 unless the process's all-time peak rises). DataLoader worker
    processes are not counted on either device."""

    def __init__(self, device):
        self.device = device
        self.method = ("torch.cuda.max_memory_allocated minus memory_allocated at the start"
                       if device.type == "cuda" else None)

    @staticmethod
    def _status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def start(self):
        gc.collect()
        try:  # hand memory freed by earlier setups back to the OS, so that RSS rises with new use
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = self._status("VmRSS")
            self.method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS at the start"
        except (OSError, KeyError):
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "ru_maxrss delta (lower bound)"

    def peak_mib(self):
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20
        if self.method.startswith("peak RSS"):
            return (self._status("VmHWM") - self.base) / 2 ** 20
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base) / 2 ** 20


# -- data ---------------------------------------------------------------------------------------
def data_cfg(data_dir, workers, batch_size=64, fast=False):
    from helper.config import get_cfg_defaults
    cfg = get_cfg_defaults()
    cfg.data_dir, cfg.num_workers, cfg.batch_size, cfg.fast = data_dir, workers, batch_size, fast
    return cfg


def images_per_second(loader, batches, device, warm=2):
    it = iter(loader)
    for _ in range(warm):
        next(it)
    sync(device)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        image, target, index = next(it)
        image = image.to(device, non_blocking=True)
        n += len(target)
    sync(device)
    return n / (time.perf_counter() - start)


def bench_data(data_dir, device, workers, quick):
    rows = []
    threads = torch.get_num_threads()
    few = 20 if quick else 60
    for w in sorted({0, workers}):
        loader = dataset.build_train_loader(data_cfg(data_dir, w))
        rate = images_per_second(loader, few if w == 0 else 3 * few, device)
        rows.append(("plain: DataLoader + PIL transforms, per image", f"{w} workers", rate))
        del loader
        gc.collect()
    if device.type == "cpu":
        settings = sorted({1, threads})
    else:
        settings = [threads]
    for t in settings:
        torch.set_num_threads(t)
        loader, _ = build_fast_loaders(data_cfg(data_dir, 0, fast=True), device)
        rate = images_per_second(loader, 100 if quick else 300, device)
        where = f"{t} torch thread{'s' if t > 1 else ''}" if device.type == "cpu" else device.type
        rows.append(("fast: DeviceLoader, batched on the device", where, rate))
        del loader
        gc.collect()
    torch.set_num_threads(threads)
    return rows


# -- training steps -----------------------------------------------------------------------------
def build_case(case, mode, data_dir, device, workers, batch_size, builds=None):
    """(cfg, loader, step) for one case in one mode: the paper's YAML with the data, path and
    precision keys overridden, random weights, and the loop's own step (`Trainer.train_step`:
    autocast forward, backward, SGD; the CUDA graph replay when the mode has one). A mode with
    the teacher cache serves the teacher's logits from `tiled_cache` (`builds`: its builds by
    teacher, reused)."""
    _, yaml_path, script, extra, _ = case
    path, _, _, options = MODES[mode]
    cached = options.get("teacher_cache", False)
    overrides = ["dataset", "synthetic", "synthetic_train_size", TRAIN_SIZE, "data_dir", data_dir,
                 "device", device.type, "fast", path == "fast",
                 "num_workers", workers, "batch_size", batch_size, "tensorboard", False] + extra
    for key, value in options.items():
        overrides += [key, os.path.join(data_dir, "teacher_cache") if key == "teacher_cache" else value]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper's low-lr warning for ShuffleV2 and co.
        cfg = load_config(os.path.join(ROOT, yaml_path), [str(v) for v in overrides], script)
    torch.manual_seed(0)
    names = [cfg.model] if script == "teacher" else [cfg.model_s, cfg.model_t]
    models = [model_dict[n](num_classes=100).to(device) for n in names]
    if cfg.channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    if cfg.compile:
        for model in models:
            model.compile()
    if script == "student":
        check_method(cfg, 1)  # what the method refuses (MLKD's two views on the fast path) is one line
    if path == "fast":
        loader, _ = build_fast_loaders(cfg, device, views=cached)
    else:
        loader = dataset.build_train_loader(cfg, strong_view=Session.strong_view(cfg, script))
    targets = torch.as_tensor(loader.dataset.targets)
    teacher = models[1] if len(models) > 1 else None
    distiller = distillers.build(cfg, models[0], teacher, targets).to(device)
    if cached:
        distiller.use_teacher_cache(tiled_cache(cfg, teacher, loader, device, {} if builds is None else builds))
    distiller.train()
    return cfg, loader, Trainer(cfg, distiller, loader, None, None, None, device).train_step


def tiled_cache(cfg, teacher, loader, device, builds):
    """A TeacherCache over all N training images, holding what the method reads of the teacher
    (logits; CRD: and the embedding). Its tables have the full size (N x 162 rows, on the
    training device), so the step's gather is the real one; their values are the teacher's
    outputs of the first CACHE_SAMPLE images' 162 views, built by helper/teacher_cache.build
    (timed) and repeated over the N images: where a row's values come from does not change the
    speed of reading it. `builds`: {(teacher, outputs): (sampled {output: array}, dtype, (images,
    views, seconds))}, filled by the first build of each and reused (the cases' teachers have
    the same seeded weights)."""
    import numpy as np
    from helper import teacher_cache
    reads = distillers.method_class(cfg.distill)[0].teacher_reads
    outputs = tuple(name for name in teacher_cache.OUTPUTS if name in reads)
    if (cfg.model_t, outputs) not in builds:
        folder = tempfile.mkdtemp(prefix="askd_cache_", dir=os.path.dirname(cfg.teacher_cache))
        try:
            sample = min(CACHE_SAMPLE[device.type], len(loader.images))
            sync(device)
            start = time.perf_counter()
            teacher_cache.build(folder, {"bench": cfg.model_t}, list(outputs), teacher, loader.images[:sample],
                                dataset.spec(cfg.dataset), cfg, device, lambda line: None)
            sync(device)
            seconds = time.perf_counter() - start
            sampled = {name: torch.from_numpy(np.load(os.path.join(folder, f"{name}.npy"))) for name in outputs}
            dtype = getattr(torch, teacher_cache.read_meta(folder)["dtype"])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        builds[cfg.model_t, outputs] = (sampled, dtype, (sample, combinations(4), seconds))
    sampled, dtype, _ = builds[cfg.model_t, outputs]
    n, views = len(loader.images), combinations(4)
    tables = {name: teacher_cache.place(values.repeat(-(-n // len(values)), 1, 1)[:n].reshape(n * views, -1),
                                        device, "(benchmark)")
              for name, values in sampled.items()}
    return teacher_cache.TeacherCache(tables, {name: tuple(v.shape[2:]) for name, v in sampled.items()}, dtype, views)


def run_steps(it, step, device, count, read_every_step):
    for _ in range(count):
        image, target, index, *view = next(it)
        image = image.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        index = index.to(device, non_blocking=True)
        _, _, loss = step(image, target, index, *view)
        if read_every_step:
            loss.item()
    sync(device)


def bench_case(case, args, data_dir, device, memory, builds=None):
    """The modes of one case, built one after the other (peak memory of each measured over its
    build and warm-up, which includes a CUDA graph's capture), then timed in interleaved blocks
    (the order rotating every repeat), so that a shared machine's load drifts hit every mode
    alike. A plain-path DataLoader refills its prefetch queue right after each batch is taken,
    so its workers' CPU time falls within its own blocks. A mode that fails to build or warm up
    is reported as failed (its error in place of the figures); the others still run."""
    setups, failed = [], {}
    for mode in args.modes:
        memory.start()
        try:
            cfg, loader, step = build_case(case, mode, data_dir, device, args.workers, args.batch_size, builds)
            it = iter(loader)
            run_steps(it, step, device, args.warmup, not cfg.fast)
        except Exception as error:  # noqa: BLE001 -- reported in the table
            failed[(case[0], mode)] = f"{type(error).__name__}: {error}".splitlines()[0][:200].replace("|", "/")
            print(f"step  {case[0]:15s} {mode:13s}: failed: {failed[(case[0], mode)]}", flush=True)
            continue
        setups.append({"key": (case[0], mode), "loader": loader, "step": step, "it": it,
                       "plain": not cfg.fast, "rates": [], "peak": memory.peak_mib(),
                       "batch": loader.batch_size})
    for r in range(args.repeats):
        for s in setups[r % len(setups):] + setups[:r % len(setups)]:
            start = time.perf_counter()
            run_steps(s["it"], s["step"], device, args.steps, s["plain"])
            s["rates"].append(args.steps * s["batch"] / (time.perf_counter() - start))
    results = {s["key"]: (statistics.median(s["rates"]), s["rates"], s["peak"]) for s in setups}
    results.update(failed)
    del setups
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


# -- packing: K runs at once --------------------------------------------------------------------
PACKING_CASE = next(c for c in CASES if c[0] == "askd_resnet8x4")
PACKING_MODE = {"cuda": "graph_cl", "cpu": "fast"}
SEEDS = 3


def forever(loader):
    while True:
        yield from loader


def packing_worker(k, device_type, data_dir, args, threads, barrier, results):
    """One of K concurrent runs: build, warm up, wait for the others, time `steps` steps."""
    torch.set_num_threads(threads)
    device = torch.device(device_type)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _, loader, step = build_case(PACKING_CASE, PACKING_MODE[device.type], data_dir, device, 0, args.batch_size)
    it = forever(loader)
    run_steps(it, step, device, args.warmup, False)
    barrier.wait()
    start = time.monotonic()
    run_steps(it, step, device, args.steps, False)
    end = time.monotonic()
    peak = torch.cuda.max_memory_reserved(device) / 2 ** 20 if device.type == "cuda" else None
    results.put((args.steps * args.batch_size, start, end, peak))


def measure_packing(k, device, data_dir, args):
    """(aggregate images/s, [images/s of each run], peak MiB of a run or None) of K runs at once."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(k), context.Queue()
    threads = max(1, (args.threads or os.cpu_count() or 1) // k) if device.type == "cpu" else 1
    workers = [context.Process(target=packing_worker, args=(k, device.type, data_dir, args, threads, barrier,
                                                             results)) for _ in range(k)]
    for w in workers:
        w.start()
    got = []
    try:
        while len(got) < k:
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed:  # the others would wait at the barrier for ever
                raise RuntimeError(f"a packed run failed (exit code {failed[0]}; its traceback is above)")
            try:
                got.append(results.get(timeout=5))
            except queue.Empty:
                continue
    finally:
        for w in workers:
            if len(got) < k:
                w.terminate()
            w.join()
    images = sum(n for n, *_ in got)
    window = max(end for _, _, end, _ in got) - min(start for _, start, _, _ in got)
    peaks = [p for *_, p in got if p is not None]
    return images / window, [n / (end - start) for n, start, end, _ in got], max(peaks) if peaks else None


def paper_runs():
    """(method cells, vanilla students, teachers) of the paper's two tables, from configs/."""
    data = paper()
    pairs = [p for t in TABLES for p in data["tables"][t]["pairs"]]
    cells = sum(method_config(m, p) is not None for p in pairs for m in paper_rows(data))
    return cells, len({pair_models(p)[1] for p in pairs}), len({pair_models(p)[0] for p in pairs})


def bench_packing(device, args, data_dir):
    rows = []
    args.mps_note = "CPU: the cores divided among the K processes"
    cuda = device.type == "cuda"
    with packing.MPS(tempfile.mkdtemp(prefix="askd_mps_")) if cuda else contextlib.nullcontext() as mps:
        if cuda:
            os.environ.update(mps.env)   # the spawned runs reach the daemon through it
            args.mps_note = f"MPS: {mps.note}"
        for k in args.packing:
            t0 = time.time()
            try:
                aggregate, each, peak = measure_packing(k, device, data_dir, args)
            except RuntimeError as error:   # out of memory, say: keep the smaller K's figures
                print(f"packing K={k}: {error}", flush=True)
                rows.append((k, None, [], None))
                break
            rows.append((k, aggregate, each, peak))
            print(f"packing K={k}: {aggregate:,.1f} images/s together (each {', '.join(f'{r:.1f}' for r in each)}), "
                  f"peak {peak or 0:,.0f} MiB a run [{time.time() - t0:.0f} s]", flush=True)
    return rows


def packing_section(device, args, command, rows):
    kind = device.type
    cells, students, teachers = paper_runs()
    runs = (cells + students + teachers) * SEEDS
    images = runs * EPOCHS * TRAIN_SIZE
    base = rows[0][1] if rows and rows[0][0] == 1 else None
    out = header(f"Packing on {kind.upper()}", device, args, command) + [
           f"- K concurrent processes, each {PACKING_CASE[4]} ({MODES[PACKING_MODE[kind]][2]}, "
           f"{MODES[PACKING_MODE[kind]][1]}), batch {args.batch_size}: {args.warmup} warm-up steps, then "
           f"{args.steps} timed steps started together; aggregate = all images / (last end - first start)",
           f"- {args.mps_note}",
           f"- the paper's two tables with {SEEDS} seeds: {cells} method cells + {students} vanilla students + "
           f"{teachers} teachers = {cells + students + teachers} runs x {SEEDS} = {runs} runs of {EPOCHS} epochs x "
           f"{TRAIN_SIZE} images, each costed as this ASKD run (training steps only: evaluation not included; "
           f"ShuffleNet/MobileNetV2 students and ResNet50 teachers cost more)"]
    if kind == "cpu":
        out.append("- on a CPU this exercises the code path only: the K processes divide the same cores, so "
                   "these figures say nothing of a GPU's packing")
    out += ["",
            "| K runs at once | images/s together | vs K=1 | images/s per run (mean) | peak memory reserved per run (MiB) "
            "| the tables on 1 device | on 8 devices |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for k, aggregate, each, peak in rows:
        if aggregate is None:
            out.append(f"| {k} | failed (see the command's output) | | | | | |")
            continue
        versus = f"{aggregate / base:.2f}x" if base else "-"
        wall = [images / (aggregate * devices) / 3600 for devices in (1, 8)]
        out.append(f"| {k} | {aggregate:,.1f} | {versus} | {statistics.fmean(each):,.1f} | "
                   f"{'-' if peak is None else f'{peak:,.0f}'} | {wall[0]:,.1f} h | {wall[1]:,.1f} h |")
    return "\n".join(out) + "\n"


# -- the teacher cache: cached beside uncached -----------------------------------------------------
def logit_runs():
    """(runs, teachers) of configs/kds/: every shipped CIFAR-100 config of a method that the
    teacher cache serves (it reads only the teacher's logits), and their distinct teachers."""
    import yaml
    from helper import teacher_cache
    runs, teachers = 0, set()
    for folder in sorted(os.listdir(os.path.join(ROOT, "configs", "kds"))):
        for name in sorted(os.listdir(os.path.join(ROOT, "configs", "kds", folder))):
            with open(os.path.join(ROOT, "configs", "kds", folder, name)) as f:
                cfg = yaml.safe_load(f)
            method = distillers.method_class(cfg.get("distill", "kd"))[0]
            if tuple(method.teacher_reads) == ("logits",) and not method.strong_view:
                try:
                    teacher_cache.check(argparse.Namespace(teacher_cache="auto", fast=True, distill=cfg["distill"],
                                                           dataset="cifar100"), method)
                except UserError:  # a method the cache refuses is not counted
                    continue
                runs += 1
                teachers.add(cfg["model_t"])
    return runs, len(teachers)


def cache_section(device, args, command, results, builds):
    kind = device.type
    plain_mode, cached_mode = CACHE_MODES[kind]
    runs, teachers = logit_runs()
    out = header(f"Teacher cache on {kind.upper()}", device, args, command) + [
        f"- each case in {MODES[plain_mode][2]} ({MODES[plain_mode][1]}) beside {MODES[cached_mode][2]}, batch "
        f"{args.batch_size}: {args.warmup} warm-up steps, then the median of {args.repeats} blocks of {args.steps} "
        f"steps, the two modes interleaved block by block",
        f"- the cached step gathers each batch's logits from a table of the full size ({TRAIN_SIZE} images x 162 "
        f"views, on the training device); its values are the teacher's outputs of the first "
        f"{CACHE_SAMPLE[kind]} images' views, built by helper/teacher_cache.build and repeated (`tiled_cache`)",
        "- cache build: that build timed; the full build projected from it (50000 x 162 views)",
        f"- the logit rows of the tables: every shipped CIFAR-100 config of a method the cache serves "
        f"({runs} configs of configs/kds/, {teachers} teachers) x {SEEDS} seeds, each costed as the KD "
        f"resnet32x4 -> resnet8x4 run of this table (training steps only); cached: plus one full build per "
        f"teacher, costed as resnet32x4's",
        "", "| case | uncached images/s | cached images/s | cached vs uncached (median) | (best block) "
            "| 240 epochs uncached | cached |", "|---|---:|---:|---:|---:|---:|---:|"]
    for case in CASES:
        name = case[0]
        a, b = rate_of(results, name, plain_mode), rate_of(results, name, cached_mode)
        if not (a and b):
            failed = [results.get((name, m)) for m in (plain_mode, cached_mode)]
            if any(isinstance(f, str) for f in failed):
                out.append(f"| {case[4]} | failed: {next(f for f in failed if isinstance(f, str))} | | | | | |")
            continue
        out.append(f"| {case[4]} | {a[0]:,.1f} | {b[0]:,.1f} | {b[0] / a[0]:.2f}x | {b[1] / a[1]:.2f}x "
                   f"| {hours(a[0])} | {hours(b[0])} |")
    out += ["", "| cache build (teacher: outputs) | views built | seconds | views/s | full build (projected) | "
                "size on disk |", "|---|---:|---:|---:|---:|---:|"]
    full_build = {}
    for (teacher, outputs), (sampled, _, (sample, views, seconds)) in builds.items():
        rate = sample * views / seconds
        if outputs == ("logits",):
            full_build[teacher] = TRAIN_SIZE * views / rate
        sizes = ", ".join(f"{name} {TRAIN_SIZE * views * values[0, 0].numel() * 4 / 1e9:.2f} GB"
                          for name, values in sampled.items())
        out.append(f"| {teacher}: {' + '.join(outputs)} | {sample * views:,} | {seconds:,.1f} | {rate:,.0f} | "
                   f"{TRAIN_SIZE * views / rate / 3600:,.2f} h | {sizes} |")
    kd = rate_of(results, "kd", plain_mode), rate_of(results, "kd", cached_mode)
    if all(kd) and "resnet32x4" in full_build:
        images = runs * SEEDS * EPOCHS * TRAIN_SIZE
        uncached = images / kd[0][0] / 3600
        cached = images / kd[1][0] / 3600 + teachers * full_build["resnet32x4"] / 3600
        out += ["", f"The logit rows ({runs} configs x {SEEDS} seeds = {runs * SEEDS} runs of {EPOCHS} epochs) on one "
                    f"such device: **{uncached:,.0f} h uncached, {cached:,.0f} h cached** (of which "
                    f"{teachers} cache builds: {teachers * full_build['resnet32x4'] / 3600:,.1f} h)."]
        if kind == "cpu":
            r = kd[1][0] / kd[0][0]
            out += ["", "| target | measured (median) | met |", "|---|---:|---|",
                    f"| cached KD step >= 1.6x the uncached one (CPU fast path, resnet32x4 -> resnet8x4) | "
                    f"{r:.2f}x | {'yes' if r >= 1.6 else '**no**'} |"]
    return "\n".join(out) + "\n"


# -- report -------------------------------------------------------------------------------------
def hours(rate):
    seconds = EPOCHS * TRAIN_SIZE / rate
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 100 * 3600 else f"{seconds / 86400:.0f} d"


def rate_of(results, name, mode):
    """(median, best block) images/s; None when the mode was not run or failed."""
    got = results.get((name, mode))
    return (got[0], max(got[1])) if got and not isinstance(got, str) else None


def ratio(results, name_a, mode_a, name_b, mode_b):
    """(median ratio, best-block ratio) of images/s, a over b; None when either is missing."""
    a, b = rate_of(results, name_a, mode_a), rate_of(results, name_b, mode_b)
    return (a[0] / b[0], a[1] / b[1]) if a and b else None


def best_fast_mode(results, name):
    rates = [(rate_of(results, name, mode), mode) for n, mode in results if n == name and MODES[mode][0] == "fast"]
    fast = [(rate[0], mode) for rate, mode in rates if rate]
    return max(fast)[1] if fast else None


def cpu_targets(data_rows, results):
    pil = next(rate for _, setting, rate in data_rows if setting == "0 workers")
    fast1 = next(rate for _, setting, rate in data_rows if setting == "1 torch thread")
    lines = [("batched augmentation >= 5x faster per image than PIL (1 core each)",
              f"{fast1 / pil:.0f}x", fast1 / pil >= 5, "-")]
    for name, *_ in CASES:
        r = ratio(results, name, "fast", name, "plain")
        if r:
            lines.append((f"{name}: fast fp32 step no slower than plain", f"{r[0]:.2f}x", r[0] >= 1.0,
                          f"{r[1]:.2f}x"))
    for name in ("kd", "askd_resnet8x4", "crd", "kd_wrn16_2"):
        r = ratio(results, name, "bf16", name, "fast")
        if r:
            student = "wrn_16_2" if "wrn" in name else "resnet8x4"
            lines.append((f"{name} ({student} student): fast bf16 >= 1.3x fast fp32", f"{r[0]:.2f}x",
                          r[0] >= 1.3, f"{r[1]:.2f}x"))
    return lines


def cuda_targets(results):
    """The issue's GPU targets, each judged on the fastest fast-path mode of its case."""
    lines = []
    for name in ("kd", "askd_resnet8x4", "askd_shufflev2"):
        mode = best_fast_mode(results, name)
        r = mode and ratio(results, name, mode, name, "plain")
        if r:
            lines.append((f"{name}: fast ({MODES[mode][2]}, {MODES[mode][1]}) >= 5x plain images/s",
                          f"{r[0]:.1f}x", r[0] >= 5, f"{r[1]:.1f}x"))
    mode = best_fast_mode(results, "askd_resnet8x4")
    if mode:
        median, best = rate_of(results, "askd_resnet8x4", mode)
        minutes = [EPOCHS * TRAIN_SIZE / rate / 60 for rate in (median, best)]
        lines.append((f"askd_resnet8x4: 240 epochs ({MODES[mode][2]}) <= 10 min (aim 5), training steps",
                      f"{minutes[0]:.1f} min", minutes[0] <= 10, f"{minutes[1]:.1f} min"))
    mode = best_fast_mode(results, "kd")
    r = mode and ratio(results, "kd", mode, "crd", mode)
    if r:
        lines.append((f"crd step time <= 1.5x kd step time ({MODES[mode][2]}, {MODES[mode][1]})",
                      f"{r[0]:.2f}x", r[0] <= 1.5, f"{r[1]:.2f}x"))
    return lines


def header(title, device, args, command):
    """The first lines of a BENCHMARKS.md section: the device, when, torch, the load, the command."""
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return [f"## {title}: {device_name(device)}", "",
            f"- measured {now}, torch {torch.__version__}, Python {platform.python_version()}; "
            f"load average (1/5/15 min) {args.load_before} before and {args.load_after} after the run",
            f"- command: `{command}`"]


def section(device, args, command, data_rows, results, memory_method, title=None):
    kind = device.type
    out = header(title or kind.upper(), device, args, command) + [
           f"- batch {args.batch_size}; per mode {args.warmup} warm-up steps, then the median of "
           f"{args.repeats} blocks of {args.steps} steps, the modes of a case interleaved block by "
           f"block; plain path with {args.workers} DataLoader workers",
           "- training step: the loop's own (`helper.trainer.Trainer.train_step`); the plain path reads "
           "the loss every step as the loop does, the fast path does not",
           f"- peak memory: {memory_method}",
           f"- 240 epochs = {EPOCHS} x {TRAIN_SIZE} images of training steps (evaluation not included)",
           "- other processes' load only ever slows a block down: the best block is the closer estimate "
           "of the machine's own speed, the median (what the targets are judged on) includes the noise"]
    if kind == "cuda":
        out.append(f"- fp32 as PyTorch runs it by default: cuDNN convolutions may use TF32 "
                   f"(torch.backends.cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}), matrix products "
                   f"{torch.get_float32_matmul_precision()} precision; cudnn.benchmark on")
    out += ["", "### Data pipeline alone", "", "| pipeline | setting | images/s |", "|---|---|---:|"]
    for what, setting, rate in data_rows:
        out.append(f"| {what} | {setting} | {rate:,.0f} |")
    out += ["", "### Training steps", "",
            "| case | path | precision | images/s (median) | ms/step | vs plain | images/s (best block) "
            "| vs plain (best) | peak memory added (MiB) | 240 epochs (median) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in CASES:
        name = case[0]
        for mode in args.modes:
            got = results.get((name, mode))
            if got is None:
                continue
            if isinstance(got, str):
                out.append(f"| {case[4]} | {MODES[mode][2]} | {MODES[mode][1]} | failed: {got} "
                           f"| | | | | | |")
                continue
            rate, rates, peak = got
            versus = ratio(results, name, mode, name, "plain")
            shown = [f"{v:.2f}x" for v in versus] if versus else ["-", "-"]
            out.append(f"| {case[4]} | {MODES[mode][2]} | {MODES[mode][1]} | {rate:,.1f} "
                       f"| {1000 * args.batch_size / rate:,.1f} | {shown[0]} | {max(rates):,.1f} | {shown[1]} "
                       f"| {peak:,.0f} | {hours(rate)} |")
    checks = cpu_targets(data_rows, results) if kind == "cpu" else cuda_targets(results)
    if checks:
        out += ["", "### Targets (judged on the medians)", "",
                "| target | measured (median) | met | measured (best block) |", "|---|---:|---|---:|"]
        out += [f"| {t} | {m} | {'yes' if ok else '**no**'} | {b} |" for t, m, ok, b in checks]
    return "\n".join(out) + "\n"


PREAMBLE = """# Benchmarks

Plain path (`fast: false`: torch DataLoader, PIL transforms per image, fp32) against the fast
path (`fast: true`: `dataset/device_loader.py`, the whole split on the device, crop/flip/normalise
batched; fp32 and `amp: bf16`; on CUDA also `cuda_graph: true`, `channels_last: true` and
`compile: true`). Written by

    python bench/benchmark.py [--device cpu|cuda] [--quick] [--steps N] [--repeats R] [--warmup W]
                              [--cases NAME,...] [--modes NAME,...] [--workers N] [--threads N]
                              [--no-write]

which replaces the section of the device it ran on (see the docstring of `bench/benchmark.py`
for what is measured and how). Teachers have random weights: speed does not depend on them.
The training set is a 50000-image synthetic set in CIFAR-100's format (the real epoch and CRD
memory size). Numbers from different machines or torch versions are not comparable.
On a GPU machine, `bash bench/gpu_checks.sh` runs `bench/check_cuda.py` (the CUDA path against
the CPU reference), the quick start on CUDA and this benchmark in one go.
"""

UNMEASURED_PACKING = """## Packing on a GPU: unmeasured

No GPU was lent to the session that wrote the packing mode: **the GPU packing figures
(`sweep.py --runs-per-gpu K`: aggregate images/s of K = 1, 2, 4, 8 ASKD runs on one GPU, and the
projected wall time of the paper's tables on 1 and 8 GPUs) are unmeasured**, and so is the share
of a GPU epoch that its evaluation takes, and the profile of the graphed ASKD step (where its
2.2 ms go: teacher forward, student forward and backward, losses, SGD), and the graphed step
with the teacher cache beside the graphed step that runs the teacher. Measure them with
`python bench/benchmark.py --device cuda --packing 1,2,4,8`, `python bench/eval_cost.py --device cuda`,
`python bench/profile_step.py --device cuda` and `python bench/benchmark.py --device cuda --teacher-cache`
(all part of `bash bench/gpu_checks.sh`, which runs within one device command's 600 s).
"""

UNMEASURED_GPU = """## GPU: unmeasured

No GPU was available where these benchmarks were run: **every GPU figure is unmeasured.**
Run `python bench/benchmark.py --device cuda` on a CUDA machine to fill this section in.
"""


def write_markdown(kind_key, text):
    sections = {}
    if os.path.exists(MARKDOWN):
        with open(MARKDOWN) as f:
            old = f.read()
        for key, body in re.findall(r"<!-- BEGIN (.+?) -->\n(.*?)<!-- END \1 -->\n", old, re.S):
            sections[key] = body
    sections[kind_key] = text
    if any(k.startswith("cuda:") for k in sections):
        sections.pop("cuda-unmeasured", None)
    else:
        sections["cuda-unmeasured"] = UNMEASURED_GPU
    if any(k.startswith("packing-cuda:") for k in sections):
        sections.pop("packing-cuda-unmeasured", None)
    elif any(k.startswith("packing") for k in sections):
        sections["packing-cuda-unmeasured"] = UNMEASURED_PACKING
    order = sorted(sections, key=lambda k: (not k.startswith("cpu"), k))
    with open(MARKDOWN, "w") as f:
        f.write(PREAMBLE)
        for key in order:
            f.write(f"\n<!-- BEGIN {key} -->\n{sections[key]}<!-- END {key} -->\n")


def publish(args, device, prefix, text, group=""):
    """Print a section and, unless --no-write, make it this device's `prefix` section of BENCHMARKS.md."""
    print("\n" + text)
    if not args.no_write:
        key = f"{prefix}{device.type}{group}:{device_name(device).split(' (')[0]}"
        write_markdown(key, text)
        print(f"written into {MARKDOWN} (section {key})")


# -- main ---------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="few steps (a CPU finishes in minutes)")
    parser.add_argument("--steps", type=int, help="steps per timed block")
    parser.add_argument("--repeats", type=int, help="timed blocks (the median is reported)")
    parser.add_argument("--warmup", type=int, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="plain path DataLoader workers (default min(4, cores))")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help="comma-separated subset of: " + ", ".join(c[0] for c in CASES) +
                        " (default: " + ",".join(DEFAULT_CASES) + "); logit: KD and every logit method")
    parser.add_argument("--modes", help="comma-separated subset of: " + ", ".join(MODES) +
                        " (default: " + "; ".join(f"{d}: {','.join(m)}" for d, m in DEFAULT_MODES.items()) + ")")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    parser.add_argument("--packing", default=None, metavar="K,...",
                        help="measure K concurrent ASKD runs instead (e.g. 1,2,4,8): sweep.py --runs-per-gpu")
    parser.add_argument("--teacher-cache", action="store_true",
                        help="measure the teacher cache instead: KD and DKD on resnet32x4 -> resnet8x4 and "
                             "wrn_40_2 -> wrn_16_2, cached beside uncached, the cache's build and size")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: CUDA is not available here")
        torch.backends.cudnn.benchmark = True
    quick_cpu = args.quick and device.type == "cpu"
    # warmup, repeats, steps (a CUDA graph is captured after 3 eager steps: warm up past that)
    defaults = (1, 3, 1) if quick_cpu else (8, 5, 20) if args.quick else (10, 7, 50)
    args.warmup = defaults[0] if args.warmup is None else args.warmup
    args.repeats = defaults[1] if args.repeats is None else args.repeats
    args.steps = defaults[2] if args.steps is None else args.steps
    args.modes = args.modes.split(",") if args.modes else DEFAULT_MODES[device.type]
    if args.teacher_cache:
        args.modes, args.cases = CACHE_MODES[device.type], ",".join(CACHE_CASES)
    if args.packing:
        try:
            args.packing = [int(k) for k in args.packing.split(",")]
        except ValueError:
            sys.exit(f"--packing takes comma-separated run counts, e.g. 1,2,4,8; got {args.packing}")
        if min(args.packing) < 1:
            sys.exit("--packing: every K must be at least 1")
    if ("plain" not in args.modes and not args.teacher_cache) or set(args.modes) - set(MODES):
        sys.exit(f"--modes must include plain and name only: {', '.join(MODES)}")
    wanted = ["kd", *(c[0] for c in LOGIT_CASES)] if args.cases == "logit" else args.cases.split(",")
    unknown = set(wanted) - {c[0] for c in CASES}
    if unknown:
        sys.exit(f"unknown case(s) {', '.join(sorted(unknown))}; valid: {', '.join(c[0] for c in CASES)}")

    args.load_before = "%.1f/%.1f/%.1f" % os.getloadavg()
    print(f"{device_name(device)}, torch {torch.__version__}: {command} (load {args.load_before})", flush=True)
    data_dir = tempfile.mkdtemp(prefix="askd_bench_")
    try:
        start = time.time()
        write_synthetic_cifar100(data_dir, TRAIN_SIZE, 1000, seed=0)
        print(f"synthetic set of {TRAIN_SIZE} images written in {time.time() - start:.0f} s", flush=True)
        if args.packing:
            rows = bench_packing(device, args, data_dir)
            args.load_after = "%.1f/%.1f/%.1f" % os.getloadavg()
            text = packing_section(device, args, command, rows)
            publish(args, device, "packing-", text)
            return
        if args.teacher_cache:
            results, builds = {}, {}
            for case in CASES:
                if case[0] in wanted:
                    results.update(bench_case(case, args, data_dir, device, PeakMemory(device), builds))
                    for mode in args.modes:
                        got = results.get((case[0], mode))
                        print(f"step  {case[0]:15s} {mode:15s}: " +
                              (f"failed: {got}" if isinstance(got, str) else f"{got[0]:9.1f} images/s"), flush=True)
            args.load_after = "%.1f/%.1f/%.1f" % os.getloadavg()
            text = cache_section(device, args, command, results, builds)
            publish(args, device, "teacher-cache-", text)
            return
        data_rows = bench_data(data_dir, device, args.workers, args.quick)
        for what, setting, rate in data_rows:
            print(f"data  {what} [{setting}]: {rate:,.0f} images/s", flush=True)
        memory = PeakMemory(device)
        results = {}
        for case in CASES:
            if case[0] not in wanted:
                continue
            t0 = time.time()
            got = bench_case(case, args, data_dir, device, memory)
            results.update(got)
            for (name, mode), figures in got.items():
                if isinstance(figures, str):
                    continue
                rate, rates, peak = figures
                print(f"step  {name:15s} {mode:13s}: {rate:9.1f} images/s "
                      f"(blocks {', '.join(f'{r:.1f}' for r in rates)}), peak {peak:,.0f} MiB, "
                      f"240 epochs {hours(rate)}", flush=True)
            print(f"      [{case[0]}: {time.time() - t0:.0f} s]", flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    args.load_after = "%.1f/%.1f/%.1f" % os.getloadavg()
    # the logit methods' table is a section of its own beside the default one
    group = "-logit" if set(wanted) & {c[0] for c in LOGIT_CASES} else ""
    text = section(device, args, command, data_rows, results, memory.method,
                   f"{device.type.upper()}, the logit methods beside KD" if group else None)
    publish(args, device, "", text, group)


if __name__ == "__main__":
    main()
