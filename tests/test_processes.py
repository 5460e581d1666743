"""The fixture that keeps processes from outliving their test (tests/processes.py): it finds, and
kills, a tree shaped as torchrun's: ranks in sessions of their own, one orphaned by its launcher."""
import os
import subprocess
import sys
import time

from processes import TAG, kill_tagged, tagged

# a launcher that starts two "ranks" in new sessions, prints their pids and waits; a rank sleeps
LAUNCHER = """
import subprocess, sys, time
ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
         for _ in range(2)]
print(*(r.pid for r in ranks), flush=True)
time.sleep(600)
"""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def test_a_tree_in_sessions_of_its_own_and_an_orphan_are_all_killed():
    tag = os.environ[TAG]  # this test's own, set by the autouse fixture
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
    ranks = [int(pid) for pid in launcher.stdout.readline().split()]
    assert all(os.getsid(pid) == pid for pid in ranks)  # each leads its own session: no process group holds them all
    launcher.kill()
    launcher.wait()  # the ranks are orphans now
    assert sorted(tagged(tag)) == sorted(ranks)
    assert sorted(kill_tagged(tag)) == sorted(ranks)
    deadline = time.time() + 10
    while any(alive(pid) for pid in ranks):
        assert time.time() < deadline, [pid for pid in ranks if alive(pid)]
        time.sleep(0.05)
    assert tagged(tag) == []
