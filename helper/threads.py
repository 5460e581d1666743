"""How many threads torch's CPU operators use (intra-op), chosen once per process.

torch's default is one thread per core. Beside DataLoader workers (each single-threaded) every
parallel region then waits for a thread that has no core, and a CPU run crawls; with no worker, a
thread per core is what the run should take. So the threads are the cores less the loader workers.
Measured (`bench/threads.py`, BENCHMARKS.md; 2 idle cores): the KD step of resnet32x4 -> resnet8x4
with no worker 1.16 s on 2 threads (the CRD repository's loop 1.14 s), 2.21 s on the 1 thread the
rule before kept (a core held back for "the rest of the machine"); with 2 workers, 2 threads
oversubscribe the cores beside a busy process (a quick-start step 0.33 s against 0.18 s on 1). The
choice depends on the machine and the config alone, not on the load at the start (a resume then
computes as the run it continues); beside other busy processes `num_threads` (or OMP_NUM_THREADS)
says how many cores are the run's.

The rule, first that applies:
1. the config key `num_threads` when set (above 0);
2. `OMP_NUM_THREADS` when set (torch read it at import; sweep.py divides the cores of packed
   CPU runs through it);
3. on the CPU: the cores this process may use (its affinity) less one for each loader worker,
   at least 1 thread;
4. beside a GPU: torch's default.
Inter-op threads are left alone: one inter-op thread changed nothing beyond noise (same bench).
"""
import os


def available_cores():
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_threads(device_type, num_threads, workers, cores, omp=None):
    """(threads to set, or None to leave torch's, and why) by the rule above; `omp` is the
    value of OMP_NUM_THREADS, None or empty when unset."""
    if num_threads > 0:
        return num_threads, f"num_threads {num_threads}"
    if omp:
        return None, f"OMP_NUM_THREADS={omp}"
    if device_type != "cpu":
        return None, "torch's default"
    return max(1, cores - workers), f"{counted(cores, 'core')}, {counted(workers, 'loader worker')}"


def set_threads(device, num_threads, workers):
    """Apply the rule for a run on `device` with `workers` DataLoader workers; the line that says
    the choice, e.g. 'cpu: 1 torch thread (2 cores, 2 loader workers)'."""
    import torch
    threads, why = choose_threads(device.type, num_threads, workers, available_cores(),
                                  os.environ.get("OMP_NUM_THREADS"))
    if threads is not None:
        torch.set_num_threads(threads)
    return f"{device.type}: {counted(torch.get_num_threads(), 'torch thread')} ({why})"


def counted(n, noun):
    """'1 core', '2 cores'."""
    return f"{n} {noun}{'s' if n != 1 else ''}"
