"""How many threads torch's CPU operators use (intra-op), chosen once per process.

torch's default is one thread per core. Beside DataLoader workers (each single-threaded) every
parallel region then waits for a thread that has no core, and a CPU run crawls; with no worker,
a thread per core is what the run should take. So the threads are the cores less the loader
workers. Measured (`bench/threads.py`, BENCHMARKS.md; 2 cores): with 2 workers torch's 2 threads
oversubscribe the cores (a quick-start step 0.41 s against 0.19 s with 1 thread beside one busy
process); with no worker 1 thread left a core idle and halved a quiet machine's KD step. Beside
another busy process (a second run, a shared machine) no rule measured at the start can know
what comes later: `num_threads` (or OMP_NUM_THREADS) says how many cores are the run's.

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
