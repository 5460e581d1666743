"""torchvision:NAME and timm:NAME models (models/library.py): the zoo's interface on the libraries'
own modules, teacher and student in both directions through the scripts, the README's table of
which method runs on which pair, pretrained weights from the local caches, teacher_input_size."""
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

import evaluate
from common.errors import UserError
from helper.battery import calibrated
from models import build_model
from runs import ROOT, call_cli, run_script

CNN, VIT, CNN2 = "torchvision:mobilenet_v3_small", "timm:vit_tiny_patch16_224", "timm:resnet18"
VIT_ARGS = {"patch_size": 8, "depth": 2}  # a 2-block ViT on 4 x 4 patches of 8 pixels: small enough for a CPU test
ARGS = {CNN: {}, VIT: VIT_ARGS, CNN2: {}}
PAIRS = {"CNN -> CNN": (CNN, CNN2), "ViT -> CNN": (VIT, CNN), "CNN -> ViT": (CNN, VIT)}


def model(name, classes=100, size=32):
    torch.manual_seed(0)
    return build_model(name, classes, size, ARGS[name])


@pytest.mark.parametrize("name", [CNN, VIT, CNN2, "torchvision:resnet18", "torchvision:efficientnet_b0"])
def test_the_zoo_interface_on_a_library_model(name):
    ARGS.setdefault(name, {})
    net = model(name).eval()
    x = torch.randn(3, 3, 32, 32)
    feats, logits = net(x, is_feat=True)
    torch.testing.assert_close(logits, net(x), rtol=0, atol=1e-6)
    classifier = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.testing.assert_close(classifier(feats[-1]), logits, rtol=0, atol=1e-6)  # feats[-1]: the pre-logits
    assert feats[-1].dim() == 2 and all(f.dim() == 4 and f.shape[0] == 3 for f in feats[:-1]) and len(feats) >= 3
    library, _, plain = name.partition(":")
    own = (torchvision.models.get_model(plain, num_classes=100) if library == "torchvision" else
           __import__("timm").create_model(plain, num_classes=100, **ARGS[name], **(
               {"img_size": 32} if name == VIT else {})))
    assert list(net.state_dict()) == list(own.state_dict())  # the library's own keys
    net.train()
    feats, logits = net(x, is_feat=True)
    (feats[-2].mean() + logits.mean()).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad and p.dim() > 1)


def test_a_torchvision_vit_gives_no_maps_and_map_methods_refuse_it():
    from distillers import build
    from runs import make_cfg
    net = build_model("torchvision:vit_b_16", 10, 32).eval()
    feats, logits = net(torch.randn(2, 3, 32, 32), is_feat=True)
    assert len(feats) == 1 and feats[0].shape == (2, 768)
    teacher = model(CNN, classes=10)
    with pytest.raises(UserError, match="reads feature maps, which the student .* gives none"):
        build(make_cfg("attention"), net, teacher)
    assert build(make_cfg("crd", nce_k=4, feat_dim=8), net, teacher, torch.arange(10)) is not None
    with pytest.raises(UserError, match="cannot be built with"):
        build_model("torchvision:vit_b_16", 10, 32, {"num_layers": 1})


def test_unknown_library_names_are_one_line():
    for name, says in (("torchvision:resnet19", "torchvision:resnet18"), ("timm:vit_tinyy_patch16_224", "did you mean")):
        with pytest.raises(UserError, match=re.escape(says)):
            build_model(name, 10, 32)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """Synthetic data and a calibrated teacher file of each model, in the library's own format."""
    from dataset.synthetic import write_synthetic_cifar100
    root = tmp_path_factory.mktemp("library")
    write_synthetic_cifar100(str(root / "data"), 96, 48, seed=0)
    for name in (CNN, VIT, CNN2):
        torch.manual_seed(0)
        net = build_model(name, 100, 32, ARGS[name])
        torch.save(calibrated(net).state_dict(), root / f"{name.replace(':', '_')}.pth")
    return root


def student_config(space, name, teacher, student, distill, **extra):
    cfg = dict(dataset="synthetic", data_dir=str(space / "data"), synthetic_train_size=96, synthetic_test_size=48,
               model_t=teacher, path_t=str(space / f"{teacher.replace(':', '_')}.pth"), model_s=student,
               model_t_kwargs=ARGS[teacher], model_s_kwargs=ARGS[student], distill=distill, alpha=1.0, beta=1.0,
               epochs=1, lr_decay_epochs="1", learning_rate=0.01, batch_size=16, num_workers=0, device="cpu",
               tensorboard=False, hint_layer=1, save_folder=str(space / name))
    if distill == "crd":
        cfg.update(nce_k=16, feat_dim=16)
    cfg = {k: v for k, v in cfg.items() if k != "hint_layer" or distill == "hint"}
    cfg.update(extra)
    path = space / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("direction", ["ViT -> CNN", "CNN -> ViT"])
@pytest.mark.parametrize("distill", ["kd", "dkd", "hint", "attention", "crd"])
def test_a_method_trains_across_a_vit_and_a_cnn_and_the_student_evaluates(space, distill, direction):
    teacher, student = PAIRS[direction]
    name = f"{distill}_{direction.replace(' -> ', '_to_')}"
    code, out, err = run_script("train_student.py", student_config(space, name, teacher, student, distill))
    assert code == 0, out + err
    accuracy = float(re.search(r"^epoch 1 .* test_acc (\S+)", out, re.M).group(1))
    last = space / name / f"{student.replace(':', '.')}_last.pth"
    code, out = call_cli(evaluate, [str(last), "--json", "--device", "cpu"])
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1])["top1"] == pytest.approx(accuracy, rel=1e-5, abs=1e-4)  # the log prints 6 digits


def readme_table():
    page = (Path(ROOT) / "docs" / "models.md").read_text()
    section = page[page.index("## Models from torchvision and timm"):]
    return {m: dict(zip(PAIRS, cells.split(" | "))) for m, cells in re.findall(r"^\| `(\w+)` \| (.*) \|$", section, re.M)
            if m != "distill"}


def test_the_readme_table_lists_every_method():
    from distillers import method_names
    assert sorted(readme_table()) == sorted(method_names())


@pytest.mark.parametrize("direction", list(PAIRS))
def test_each_method_on_each_pair_as_the_readme_table_says(space, direction):
    from distillers import method_class
    from helper.battery import build_distiller
    from helper.trainer import Trainer
    teacher, student = PAIRS[direction]
    wrong = []
    for method, cells in readme_table().items():
        cfg_path = student_config(space, f"table_{method}", teacher, student, method, **method_class(method)[0].check_settings)
        try:
            cfg, distiller, batch = build_distiller(cfg_path)  # 16 images of the training set's labels
            distiller.train()
            trainer = Trainer(cfg, distiller, None, None, None, None, torch.device("cpu"))
            for _ in range(2):
                _, losses, loss = trainer.step(trainer.optimizer, distiller, *batch)
            ran = bool(torch.isfinite(loss)) or f"non-finite {losses}"
        except UserError as e:
            ran = False
            if "\n" in str(e).strip():
                wrong.append(f"{method}: refused in more than one line")
        said = cells[direction].startswith("yes")
        if ran is not True and said or ran is True and not said:
            wrong.append(f"{method}: docs/models.md says '{cells[direction]}', {'runs' if ran is True else ran or 'refused'}")
    assert not wrong, "; ".join(wrong)


def test_a_preact_method_is_refused_before_any_run_folder(space):
    code, out, err = run_script("train_student.py", student_config(space, "refused_ofd", CNN, CNN2, "ofd"))
    assert code != 0 and "pre-activation" in err and len(err.strip().splitlines()) == 1
    assert not (space / "refused_ofd").exists()


def test_teacher_input_size_resizes_the_images_for_the_teacher(space):
    torch.manual_seed(0)
    torch.save(calibrated(build_model(VIT, 100, 64, VIT_ARGS), size=64).state_dict(), space / "vit64.pth")
    cfg = student_config(space, "vit64", VIT, CNN, "kd", path_t=str(space / "vit64.pth"))
    code, out, err = run_script("train_student.py", cfg)
    assert code != 0 and "teacher_input_size" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_script("train_student.py", cfg, "teacher_input_size", "64")
    assert code == 0, out + err


def test_torchvision_pretrained_weights_come_from_the_local_cache(tmp_path, monkeypatch):
    from helper.checkpoint import load_teacher
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").IMAGENET1K_V1
    with pytest.raises(UserError, match=re.escape(weights.url)):
        load_teacher(CNN, "torchvision:IMAGENET1K_V1", 1000, image_size=32)
    released = model(CNN, classes=1000).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(released, tmp_path / "hub" / "checkpoints" / Path(weights.url).name)
    loaded = load_teacher(CNN, "torchvision:IMAGENET1K_V1", 1000, image_size=32).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in released.items())
    with pytest.raises(UserError, match="of 1000 classes"):
        load_teacher(CNN, "torchvision:IMAGENET1K_V1", 100, image_size=32)


def test_timm_pretrained_weights_come_from_the_local_cache(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from helper.checkpoint import load_teacher
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    tag = "augreg_in21k_ft_in1k"
    with pytest.raises(UserError, match=f"hf download timm/vit_tiny_patch16_224.{tag}"):
        load_teacher(VIT, f"timm:{tag}", 1000, image_size=32, kwargs=VIT_ARGS)
    torch.manual_seed(3)
    released = __import__("timm").create_model("vit_tiny_patch16_224", num_classes=1000, img_size=32, **VIT_ARGS)
    repo = tmp_path / f"models--timm--vit_tiny_patch16_224.{tag}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in released.state_dict().items()},
              str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    loaded = load_teacher(VIT, f"timm:{tag}", 1000, image_size=32, kwargs=VIT_ARGS).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in released.state_dict().items())


def test_a_safetensors_file_loads_as_path_t(tmp_path):
    from safetensors.torch import save_file

    from helper.checkpoint import load_teacher
    released = model(CNN2).state_dict()
    save_file({k: v.contiguous() for k, v in released.items()}, str(tmp_path / "resnet18.safetensors"))
    loaded = load_teacher(CNN2, str(tmp_path / "resnet18.safetensors"), 100, image_size=32).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in released.items())
