"""DeiT's distillation token against the figures measured on facebookresearch/deit
(reference/losses_deit.json; reference/README.md says how): DistillationLoss none / soft / hard with
each base criterion (values and gradients to both heads), timm's distilled ViT's two heads in
training and their mean in evaluation, and a run whose checkpoint evaluate.py scores as the run did."""
import json
import os

import pytest
import torch

import evaluate
from distillers import build
from models import build_model, model_dict
from runs import call_cli, make_cfg, run_script, tiny_config
from test_ofa import assert_grad, soft_labels
from tests.deterministic import fill_deterministic, fixed_input

REF = json.load(open(os.path.join(os.path.dirname(__file__), "reference", "losses_deit.json")))
VALUE = dict(rel=1e-6, abs=0)


class Heads(torch.nn.Module):
    """A student that returns the given (class, distillation) logits, as a distilled ViT trains."""

    def __init__(self, cls, dist):
        super().__init__()
        self.cls, self.dist = cls, dist
        self.fc = torch.nn.Linear(1, 1)

    def set_distilled_training(self, on):
        self.on = on

    def forward(self, x, is_feat=False, preact=False):
        return self.cls, self.dist


class Logits(torch.nn.Module):
    """A teacher that returns the given logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.fc = torch.nn.Linear(1, 1)

    def forward(self, x, is_feat=False, preact=False):
        return ([self.logits], self.logits) if is_feat else self.logits


def given(seed, scale):
    return scale * torch.randn(8, 100, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("case", REF["cases"], ids=lambda c: f"{c['distillation_type']}-{c['alpha']}-{c['tau']}-"
                                                             f"{c['base_criterion']}")
def test_the_loss_and_its_gradients_equal_deits(case):
    cls, dist = given(21, 2.0).requires_grad_(), given(22, 2.0).requires_grad_()
    labels = torch.arange(8) * 13 % 100
    criterion = case["base_criterion"]
    target = soft_labels(labels) if criterion.startswith("SoftTarget") else labels
    smoothing = 0.1 if criterion.startswith("LabelSmoothing") else 0.0
    cfg = make_cfg("deit", gamma=1.0, beta=1.0, alpha=0.0, deit_distillation=case["distillation_type"],
                   deit_alpha=case["alpha"], deit_tau=case["tau"], label_smoothing=smoothing)
    distiller = build(cfg, Heads(cls, dist), Logits(given(23, 3.0)))
    _, losses = distiller(torch.zeros(8, 3, 32, 32, dtype=torch.float64), target)
    loss = sum(losses.values())
    assert loss.item() == pytest.approx(case["loss"], **VALUE)
    loss.backward()
    assert_grad(cls.grad, case["grad_class_logits"])
    if case["grad_dist_logits"] is None:
        assert dist.grad is None
    else:
        assert_grad(dist.grad, case["grad_dist_logits"])


def test_timms_distilled_vit_gives_both_heads_in_training_and_their_mean_in_evaluation():
    ref = REF["e2e"]
    model = build_model("timm:deit_tiny_distilled_patch16_224", 100, 32, {"patch_size": 4}).double()
    fill_deterministic(model)
    build(make_cfg("deit", beta=1.0), model, model_dict["resnet8"](num_classes=100))  # the method turns the heads on
    x = fixed_input(4)
    with torch.no_grad():
        cls, dist = model.train()(x)
        mean = model.eval()(x)
    trained = ref["train_mode_set_distilled_training_True"]
    assert cls.sum().item() == pytest.approx(trained["class_head"]["sum"], **VALUE)
    assert dist.sum().item() == pytest.approx(trained["dist_head"]["sum"], **VALUE)
    assert mean.sum().item() == pytest.approx(ref["eval_mode"]["sum"], **VALUE)
    assert torch.allclose(mean, (cls + dist) / 2)


def test_a_distillation_head_is_required_for_soft_or_hard(tmp_path, write_cfg, synthetic_dir, teacher_file):
    cfg = tiny_config(synthetic_dir, str(tmp_path / "run"), model_s="resnet8", model_t="resnet14",
                      path_t=teacher_file, distill="deit", beta=1.0)
    cfg.pop("model")
    code, out, err = run_script("train_student.py", write_cfg(cfg))
    assert code == 2 and "the student's distillation head, which ResNet has not" in err, out + err
    assert not (tmp_path / "run").exists()


def test_a_run_deploys_the_mean_of_the_heads_and_evaluate_scores_it_as_the_run(tmp_path, write_cfg, synthetic_dir,
                                                                               teacher_file):
    """A CNN teacher, a distilled ViT student (4-pixel patches, 2 blocks), hard distillation with
    Mixup: the run's test top-1 of its last epoch is evaluate.py's on its last checkpoint."""
    folder = tmp_path / "run"
    cfg = tiny_config(synthetic_dir, str(folder), model_s="timm:deit_tiny_distilled_patch16_224", model_t="resnet14",
                      path_t=teacher_file, distill="deit", beta=1.0, model_s_kwargs={"patch_size": 4, "depth": 2},
                      mixup=0.8, cutmix=1.0, optimizer="adamw", learning_rate=1e-3, epochs=2)
    cfg.pop("model")
    code, out, err = run_script("train_student.py", write_cfg(cfg))
    assert code == 0, out + err
    last = [line for line in (folder / "log.txt").read_text().splitlines() if line.startswith("epoch 2 ")][0]
    logged = float(last.split(" test_acc ")[1].split()[0])
    assert " train_deit " in last
    code, text = call_cli(evaluate, [str(folder / "timm.deit_tiny_distilled_patch16_224_last.pth"), "--json"])
    assert code == 0 and json.loads(text.splitlines()[-1])["top1"] == pytest.approx(logged), text
