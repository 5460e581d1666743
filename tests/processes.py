"""No process a test starts outlives it.

Every test runs with ASKD_TEST_PROCESS=<a tag of its own> in its environment (conftest.py's
autouse fixture), which every process it starts inherits, and every process those start: a
script, torchrun and its ranks (each in a session of its own), spawned ranks, a submitit job.
When the test ends, passed, failed or timed out, every process still carrying the tag is killed.
A tree is found by its tag rather than by its process group because torchrun starts each rank
in a new session, and a rank whose torchrun died belongs to no one.
"""
import os
import signal
import subprocess
import time

TAG = "ASKD_TEST_PROCESS"


def tagged(tag):
    """The pids of the processes whose environment carries `tag`: this one aside, and this one's
    multiprocessing resource tracker (started by a test's spawn, it serves this process's later
    tests too)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"{TAG}={tag}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:  # gone, or not ours to read
            continue
        if not (parent == os.getpid() and b"multiprocessing.resource_tracker" in command):
            pids.append(int(entry))
    return pids


def kill_tagged(tag, patience=10.0):
    """SIGKILL every process carrying `tag` until none is left (`patience` seconds at most, for
    processes still starting); the pids that were killed."""
    killed, deadline = [], time.time() + patience
    while time.time() < deadline:
        pids = tagged(tag)  # a zombie's environment reads empty: it is not found again
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                continue
        time.sleep(0.05)
        for pid in pids:  # this process's own children: collected, not left as zombies
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
    return killed


def communicate(process, timeout):
    """`process.communicate(timeout=...)`'s output; on a timeout the process is killed (the test's
    fixture kills what it started) and the test fails with what it printed so far."""
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        out = process.communicate()[0]
        raise AssertionError(f"no exit within {timeout} s; it printed:\n{out}") from None
