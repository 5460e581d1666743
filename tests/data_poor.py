"""The data-poor synthetic task (test_methods' KD test), shareable between test files: a resnet14
teacher learns from 2000 images (3 epochs, noise 2.0); a resnet8 student from 300 (3 per class,
10 epochs), alone or distilled. Every run happens once per test process, however many tests ask
(the tests that ask share the xdist group `data_poor`, so one process runs them all)."""
import yaml

from runs import run_script, tiny_config

COMMON = dict(synthetic_test_size=500, synthetic_noise=2.0, batch_size=50, print_freq=100)
STUDENT = dict(COMMON, synthetic_train_size=300, epochs=10, lr_decay_epochs="8")
_runs = {}  # name -> final test top-1; "teacher" -> the teacher's checkpoint


def _train(root, name, script, cfg):
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, _, err = run_script(script, str(path))
    assert code == 0, err


def _root(tmp_path_factory):
    if "root" not in _runs:
        _runs["root"] = tmp_path_factory.mktemp("data_poor")
    return _runs["root"]


def teacher_checkpoint(tmp_path_factory):
    root = _root(tmp_path_factory)
    if "teacher" not in _runs:
        _train(root, "teacher", "train_teacher.py",
               tiny_config(str(root / "data"), str(root / "teacher"), model="resnet14", synthetic_train_size=2000,
                           epochs=3, lr_decay_epochs="2", **COMMON))
        _runs["teacher"] = str(root / "teacher" / "resnet14_last.pth")
    return _runs["teacher"]


def final_accuracy(tmp_path_factory, name, **method):
    """Final test top-1 of the student: alone when `method` is empty, else distilled from the
    teacher with the config keys `method` (distill, alpha, beta, ...)."""
    if name not in _runs:
        root = _root(tmp_path_factory)
        cfg = tiny_config(str(root / "poor"), str(root / name), **STUDENT)
        if method:
            cfg.pop("model")
            cfg.update(model_s="resnet8", model_t="resnet14", path_t=teacher_checkpoint(tmp_path_factory), **method)
        _train(root, name, "train_student.py" if method else "train_teacher.py", cfg)
        last = [line for line in open(root / name / "log.txt") if line.startswith("epoch ")][-1].split()
        _runs[name] = float(last[last.index("test_acc") + 1])
    return _runs[name]
