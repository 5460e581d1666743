"""Every registered method passes the method battery (helper/battery.py): a new method is checked
by being registered. The 2-rank check runs every method in one spawn."""
import pytest

from distillers import method_names
from helper.battery import Battery, Workspace, check_ddp, exit_status, method_pairs, run_battery, table

METHODS = method_names()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One teacher cache for every battery of this process (same teachers, same data)."""
    return str(tmp_path_factory.mktemp("battery_teacher_cache"))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_passes_the_battery(method, cache_dir):
    checks = run_battery(method, ddp=False, cache_dir=cache_dir)
    assert exit_status(checks) == 0, table(method, checks)
    assert {c.name for c in checks} >= {"builds", "gradients", "lowers", "resume", "fast", "teacher_cache",
                                        "min_batch"}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    pairs = {method: method_pairs(method)[:1] for method in METHODS}
    ws = Workspace(str(tmp_path_factory.mktemp("battery_ddp")), sorted({p for first in pairs.values() for p in first}))
    jobs = []
    for method in METHODS:
        battery = Battery(method, pairs[method], {}, ws)
        assert battery.builds()[0] == "pass"
        jobs.append((method, battery.cfg_path))
    return check_ddp(jobs)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_under_two_gloo_ranks(method, ddp_results):
    check = ddp_results[method]
    assert check.status == "pass", check.reason
