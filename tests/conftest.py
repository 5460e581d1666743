"""Shared fixtures: a small synthetic CIFAR-100 written in the real format, and a config writer."""
import os
import sys
import uuid

import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# One thread in this process and in every script the tests start: the tests run several
# processes at once on a small machine, where 2 threads each crawl; and the in-process and
# subprocess halves of the resume tests must sum floats in the same order.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_process_outlives_the_test(monkeypatch):
    """Tag the test's environment; at its end, whatever the outcome, kill every process that
    inherited the tag (tests/processes.py)."""
    from processes import TAG, kill_tagged
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    yield
    kill_tagged(tag)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A 600/200-image synthetic CIFAR-100 on disk (shared by the whole session: read-only)."""
    from dataset.synthetic import write_synthetic_cifar100
    root = str(tmp_path_factory.mktemp("synthetic"))
    write_synthetic_cifar100(root, 600, 200, seed=0, noise=1.0)
    return root


@pytest.fixture
def write_cfg(tmp_path):
    """write_cfg(dict or text) -> path of a YAML file in the test's temporary folder."""
    counter = iter(range(1000))

    def write(content):
        path = tmp_path / f"cfg{next(counter)}.yaml"
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return str(path)
    return write


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory):
    """A resnet14 teacher checkpoint with seeded random weights (CRD's format)."""
    from models import model_dict
    path = tmp_path_factory.mktemp("teacher") / "resnet14.pth"
    torch.manual_seed(0)
    torch.save({"model": model_dict["resnet14"](num_classes=100).state_dict()}, path)
    return str(path)
