"""Several runs on one GPU (`sweep.py --runs-per-gpu K`): K training processes share each GPU.

Why K processes, not K runs in one process on K CUDA streams: a packed run stays exactly the run
it is alone (its own process, run folder, seeds, exact resume, log and checkpoints; the same seed
on the same device and settings gives the same weights bit for bit, checked by the tests on the
CPU), it keeps its own CUDA graph, and an error or an out-of-memory kills one run, not K. One
process would share one interpreter (the GIL serialises the host side of K eager steps), one
caching allocator and one fate, and the loop would have to interleave K trainers. What processes
cost: kernels of different processes time-slice on a GPU instead of running side by side. CUDA
MPS (Multi-Process Service) lifts that, so when `nvidia-cuda-mps-control` exists and no MPS
daemon is running, the sweep starts one for its processes (pipe and log folders of its own under
`<save_root>/.mps`) and quits it at the end; a daemon the user started is used as it is. Whether
MPS helps, and how much K gives, is what `bench/benchmark.py --packing` measures on a GPU.

Memory: a run on CUDA writes `peak_memory.json` into its run folder after every epoch
(`torch.cuda.max_memory_reserved` and `max_memory_allocated`). The estimate for one run is the
largest peak recorded in the selection's run folders; where none is recorded yet, a probe runs
first: the first run to launch, with its own settings for one epoch (`epochs 1`, `init_epochs 1`)
in a scratch folder, alone on the GPU. K is refused when K x (peak reserved + CUDA_CONTEXT) is
more than the free memory of a GPU (measured before launching, in a short child process).

On the CPU, K means K concurrent processes with the cores divided among them (OMP_NUM_THREADS
= cores // K unless already set, the cores counted as helper/threads.py counts them; a run takes
that value unless its config sets num_threads); K above the number of cores is refused (a run
would get less than one core). Memory is not checked there.
"""
import json
import os
import shutil
import subprocess
import sys

from common.errors import UserError
from common.files import write_atomic

from .threads import available_cores

PEAK_MEMORY = "peak_memory.json"
CUDA_CONTEXT = 512 * 2 ** 20   # what a process's CUDA context takes beside its tensors (bytes)
MPS_CONTROL = "nvidia-cuda-mps-control"
GIB = 2 ** 30


def write_peak_memory(folder, device):
    """The run's peak CUDA memory so far, for the sweep's packing (called by the trainer)."""
    import torch
    peak = {"max_memory_reserved": torch.cuda.max_memory_reserved(device),
            "max_memory_allocated": torch.cuda.max_memory_allocated(device),
            "device": torch.cuda.get_device_name(device)}
    write_atomic(os.path.join(folder, PEAK_MEMORY), json.dumps(peak).encode(), "peak memory record")


def read_peak(folder):
    """Peak reserved bytes recorded in `folder`, or None."""
    try:
        with open(os.path.join(folder, PEAK_MEMORY)) as f:
            return int(json.load(f)["max_memory_reserved"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recorded_peak(folders):
    """(largest recorded peak in bytes, its folder), or (None, None)."""
    found = [(peak, folder) for folder in folders if (peak := read_peak(folder)) is not None]
    return max(found) if found else (None, None)


def check_fit(k, peak, free, where="the GPU"):
    """Refuse K runs of `peak` bytes each when they do not fit in `free` bytes."""
    need = k * (peak + CUDA_CONTEXT)
    if need > free:
        fit = free // (peak + CUDA_CONTEXT)
        raise UserError(f"--runs-per-gpu {k}: {k} runs need about {need / GIB:.1f} GiB "
                        f"({peak / GIB:.2f} GiB measured peak + {CUDA_CONTEXT / GIB:.1f} GiB CUDA context each) "
                        f"but {where} has {free / GIB:.1f} GiB free: set --runs-per-gpu {max(1, fit)}")
    return need


def free_memory(gpus):
    """Free bytes of each GPU id (CUDA_VISIBLE_DEVICES values), asked in a child process so that
    this one holds no CUDA context."""
    code = ("import torch\n"
            "print(' '.join(str(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())))")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    values = out.stdout.split()
    if out.returncode != 0 or len(values) != len(gpus):
        raise UserError(f"cannot read the free memory of GPU(s) {','.join(gpus)}: "
                        f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    return dict(zip(gpus, map(int, values)))


def cpu_threads(k, cores=None):
    """Threads for each of K concurrent CPU runs; K above the core count is refused."""
    cores = cores or available_cores()
    if k > cores:
        raise UserError(f"--runs-per-gpu {k} on the CPU runs {k} processes at once, more than its {cores} "
                        f"cores: set --runs-per-gpu {cores} or less")
    return max(1, cores // k)


# -- CUDA MPS -------------------------------------------------------------------------------------

class MPS:
    """The MPS control daemon of a packed sweep: started when the binary exists and no daemon is
    running (the user's is used as it is); `env` holds what the runs need to reach it."""

    def __init__(self, folder):
        self.folder, self.env, self.started, self.note = folder, {}, False, ""

    def __enter__(self):
        control = shutil.which(MPS_CONTROL)
        user_pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
        if control is None:
            self.note = f"{MPS_CONTROL} not found: the packed runs time-slice the GPU without MPS"
        elif os.path.exists(os.path.join(user_pipe, "control")):
            self.note = f"using the running MPS daemon ({user_pipe})"
        else:
            env = {"CUDA_MPS_PIPE_DIRECTORY": os.path.join(self.folder, "pipe"),
                   "CUDA_MPS_LOG_DIRECTORY": os.path.join(self.folder, "log")}
            for path in env.values():
                os.makedirs(path, exist_ok=True)
            done = subprocess.run([control, "-d"], env=dict(os.environ, **env), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if done.returncode == 0:
                self.env, self.started = env, True
                self.note = f"started an MPS daemon for the packed runs ({env['CUDA_MPS_PIPE_DIRECTORY']})"
            else:
                self.note = f"could not start MPS ({done.stderr.strip() or done.returncode}): runs time-slice"
        return self

    def __exit__(self, *exc):
        if self.started:
            subprocess.run([shutil.which(MPS_CONTROL) or MPS_CONTROL], input="quit\n", text=True,
                           env=dict(os.environ, **self.env), capture_output=True)
