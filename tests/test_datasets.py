"""The data sets of the registry, each read from generated files in its real layout by the real
reader, trained end to end through both scripts; the fast paths of Tiny-ImageNet (batched crop,
pad 8) and ImageNet (JPEG decoding on the device, here the CPU); bad data is one line."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms

import dataset
from common.errors import UserError
from dataset import cifar10, imagenet, tiny_imagenet
from dataset.device_loader import build_fast_loaders, crop_flip, draw_augmentation, normalize
from dataset.gpu_jpeg import JpegLoader, resized_crop_params
from helper.config import get_cfg_defaults
from layouts import write_cifar10, write_image_folder, write_tiny_imagenet
from models import model_dict
from runs import run_script, weights

# the generated sets have fewer classes than the real ones: the readers warn (asserted where tested)
# torchvision 0.29 announces that its decoders move to TorchCodec: still there, used by gpu_jpeg
pytestmark = [pytest.mark.filterwarnings("ignore:.*(classes, not|class folders, not)"),
              pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")]

WNIDS = ["n09999999", "n01443537", "n05555555", "n02000000"]      # wnids.txt order: not sorted
SORTED = sorted(WNIDS)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    cifar = write_cifar10(str(base / "cifar10"))
    write_tiny_imagenet(str(base / "tiny"), WNIDS, train_per_class=2, val_per_class=1)
    write_image_folder(str(base / "imagenet"), SORTED[:2], train_per_class=3, val_per_class=1, height=60, width=80)
    return {"cifar10": str(base / "cifar10"), "tiny_imagenet": str(base / "tiny"),
            "imagenet": str(base / "imagenet"), "cifar10_written": cifar}


def cfg_of(name, root, **extra):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.data_dir, cfg.download = name, root, False
    cfg.update(extra)
    return cfg


def test_registry():
    assert dataset.NAMES == ("cifar100", "cifar10", "tiny_imagenet", "imagenet", "imagefolder", "synthetic")
    shape = {name: (dataset.spec(name).num_classes, dataset.spec(name).image_size) for name in dataset.NAMES}
    assert shape == {"cifar100": (100, 32), "cifar10": (10, 32), "tiny_imagenet": (200, 64),
                     "imagenet": (1000, 224), "imagefolder": (None, 224), "synthetic": (100, 32)}
    assert dataset.data_root(cfg_of("cifar10", "")) == "./data/cifar10"
    assert dataset.data_root(cfg_of("imagenet", "/x")) == "/x"
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        dataset.spec("mnist")


def test_cifar10_reader_agrees_with_torchvision(roots, monkeypatch):
    from torchvision.datasets import CIFAR10, cifar
    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)   # ours lack the official md5
    for split, train in (("train", True), ("test", False)):
        reference = CIFAR10(roots["cifar10"], train=train, download=False)
        images, labels = cifar10.read_split(roots["cifar10"], split)
        assert np.array_equal(images, reference.data) and labels.tolist() == reference.targets
    written = roots["cifar10_written"]
    images, labels = cifar10.read_split(roots["cifar10"], "train")
    assert len(images) == 20 and labels[4:8].tolist() == written["data_batch_2"][1]   # files in order
    loader = dataset.build_test_loader(cfg_of("cifar10", roots["cifar10"]), batch_size=4)
    image, target, index = next(iter(loader))
    assert image.shape == (4, 3, 32, 32) and index.tolist() == [0, 1, 2, 3]
    with pytest.raises(UserError, match="CIFAR-10 not found .* download is off: put cifar-10-python.tar.gz"):
        dataset.prepare_data(cfg_of("cifar10", roots["cifar10"] + "/nothing"))


def test_tiny_imagenet_reader(roots):
    with pytest.warns(UserWarning, match="lists 4 classes, not 200"):
        train = tiny_imagenet.read(roots["tiny_imagenet"], "train")
        test = tiny_imagenet.read(roots["tiny_imagenet"] + "/tiny-imagenet-200", "test")  # the folder itself
    # class = index in sorted wnids (ImageFolder's numbering of train/'s class folders)
    assert [p.split("/")[-3] for p in train.paths] == [w for w in SORTED for _ in range(2)]
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # val: labels from val_annotations.txt (val_k is of WNIDS[k])
    assert [p.split("/")[-1] for p in test.paths] == [f"val_{k}.JPEG" for k in range(4)]
    assert test.targets.tolist() == [SORTED.index(w) for w in WNIDS]
    from torchvision.datasets import ImageFolder
    reference = ImageFolder(roots["tiny_imagenet"] + "/tiny-imagenet-200/train")
    assert reference.classes == SORTED and [t for _, t in reference.samples] == train.targets.tolist()
    image = tiny_imagenet.train_transform()(train.load(0))
    assert image.shape == (3, 64, 64)


def test_imagenet_reader_is_image_folder(roots):
    from torchvision.datasets import ImageFolder
    with pytest.warns(UserWarning, match="2 class folders, not 1000"):
        for split, folder in (("train", "train"), ("test", "val")):
            files = imagenet.read(roots["imagenet"], split)
            reference = ImageFolder(f"{roots['imagenet']}/{folder}")
            assert [(p, t) for p, t in zip(files.paths, files.targets.tolist())] == reference.samples
    assert imagenet.train_transform()(files.load(0)).shape == imagenet.test_transform()(files.load(0)).shape \
        == (3, 224, 224)


# --------------------------------------------------------------------------- fast paths

def test_tiny_imagenet_crop_flip_equals_torchvision_at_every_corner(roots):
    """pad 8: 17 x 17 offsets; the batched crop equals torchvision's pad -> crop -> flip bit for bit."""
    with pytest.warns(UserWarning):
        files = tiny_imagenet.read(roots["tiny_imagenet"], "train")
    images = files.array()
    assert images.shape == (8, 64, 64, 3)
    dy = torch.tensor([0, 16, 0, 16, 8, 3, 11, 5])
    dx = torch.tensor([0, 0, 16, 16, 8, 14, 2, 9])
    flip = torch.tensor([False, True, False, True, True, False, True, False])
    mean, std = tiny_imagenet.MEAN, tiny_imagenet.STD
    ours = normalize(crop_flip(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), dy, dx, flip, pad=8),
                     mean, std)
    for k in range(8):
        pil = TF.crop(TF.pad(Image.fromarray(images[k]), 8), int(dy[k]), int(dx[k]), 64, 64)
        expected = tiny_imagenet.test_transform()(TF.hflip(pil) if flip[k] else pil)
        assert torch.equal(ours[k], expected), k
    torch.manual_seed(0)
    dy, dx, flip = draw_augmentation(20000, "cpu", pad=8)
    assert dy.min() == dx.min() == 0 and dy.max() == dx.max() == 16
    counts = torch.bincount(dy * 17 + dx, minlength=289)
    assert counts.min() > 0 and abs(flip.float().mean() - 0.5) < 0.02


def test_tiny_imagenet_fast_loaders(roots):
    with pytest.warns(UserWarning):
        train, test = build_fast_loaders(cfg_of("tiny_imagenet", roots["tiny_imagenet"], batch_size=4),
                                         torch.device("cpu"))
    assert train.images.shape == (8, 3, 64, 64) and len(train) == 2 and len(test) == 1
    image, target, index = next(iter(test))
    plain = next(iter(dataset.build_test_loader(cfg_of("tiny_imagenet", roots["tiny_imagenet"]))))
    assert torch.equal(image, plain[0]) and torch.equal(target, plain[1])


@pytest.mark.parametrize("size", [(375, 500), (500, 333), (20, 300), (300, 20), (64, 64)])
def test_resized_crop_sampler_draws_as_torchvision(size):
    picture = torch.zeros(1, *size)
    get_params = transforms.RandomResizedCrop.get_params
    for seed in range(30):
        torch.manual_seed(seed)
        expected = get_params(picture, [0.08, 1.0], [3 / 4, 4 / 3])
        assert resized_crop_params(*size, torch.Generator().manual_seed(seed)) == expected


def test_jpeg_loader_on_the_cpu_matches_the_plain_path(roots):
    """Decode on the device path (here the CPU): the test view within about a grey level of
    PIL's Resize(256) + CenterCrop(224); training views from torchvision's draws, same seed."""
    with pytest.warns(UserWarning):
        files = imagenet.read(roots["imagenet"], "train")
    grey = 1 / 255 / min(imagenet.STD)
    test = JpegLoader(files, 4, "cpu", train=False)
    assert len(test) == 2
    for image, target, index in test:
        for k, i in enumerate(index.tolist()):
            expected = imagenet.test_transform()(files.load(i))
            assert (image[k] - expected).abs().max() <= 2 * grey and target[k] == files.targets[i]
    train = JpegLoader(files, 4, "cpu", sampler=dataset.EpochSampler(len(files), seed=0), train=True)
    assert len(train) == 1                                  # 6 images: the partial batch is dropped
    torch.manual_seed(5)
    image, target, index = next(iter(train))
    torch.manual_seed(5)
    torch.manual_seed(int(torch.randint(2 ** 62, (1,)).item()))    # the loader's generator seed
    pipeline = imagenet.train_transform()
    for k, i in enumerate(index.tolist()):
        expected = pipeline(files.load(i))
        assert (image[k] - expected).abs().mean() < grey and (image[k] - expected).abs().max() <= 4 * grey


def test_jpeg_decode_takes_imagenets_odd_files(tmp_path):
    """ImageNet holds a few grayscale and CMYK JPEGs and a PNG named .JPEG: each decodes to RGB
    as the plain path's PIL convert('RGB') does (the PNG through PIL)."""
    from dataset.gpu_jpeg import decode, read_bytes
    from layouts import ramp
    rgb = Image.fromarray(ramp(24, 32, 3))
    pictures = {"grey.JPEG": (rgb.convert("L"), "JPEG"), "cmyk.JPEG": (rgb.convert("CMYK"), "JPEG"),
                "png.JPEG": (rgb, "PNG"), "rgb.JPEG": (rgb, "JPEG")}
    for name, (picture, kind) in pictures.items():
        picture.save(tmp_path / name, kind, **({"quality": 95} if kind == "JPEG" else {}))
    paths = [str(tmp_path / name) for name in pictures]
    decoded = decode([read_bytes(p) for p in paths], torch.device("cpu"))
    for path, image in zip(paths, decoded):
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.shape == expected.shape == (3, 24, 32), path
        assert (image.int() - expected.int()).abs().float().mean() < 3, path


# --------------------------------------------------------------------------- end to end

RUNS = {   # data set: (model, data root key or generated layout, extra keys)
    "cifar100": ("resnet8", dict()),
    "cifar10": ("resnet8", dict()),
    "synthetic": ("resnet8", dict(synthetic_train_size=8, synthetic_test_size=4)),
    "tiny_imagenet": ("vgg8", dict()),
    "imagenet": ("MobileNetV1", dict()),
}


def run_cfg(name, root, save, **extra):
    cfg = dict(dataset=name, data_dir=root, download=False, epochs=1, lr_decay_epochs="1", batch_size=4,
               num_workers=0, print_freq=1, save_freq=1, save_folder=str(save), device="cpu", tensorboard=False)
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory):
    from dataset.synthetic import write_synthetic_cifar100
    root = str(tmp_path_factory.mktemp("cifar100"))
    write_synthetic_cifar100(root, 8, 4, seed=0)       # CIFAR-100's own file format
    return root


@pytest.mark.parametrize("name", list(RUNS))
def test_every_data_set_trains_through_both_scripts(name, roots, cifar100_root, tmp_path, write_cfg):
    model, extra = RUNS[name]
    root = {"cifar100": cifar100_root, "synthetic": str(tmp_path / "synthetic")}.get(name) or roots[name]
    fast = dict(fast=True) if name == "tiny_imagenet" else {}        # the device-resident path at 64x64
    code, out, err = run_script("train_teacher.py", write_cfg(run_cfg(name, root, tmp_path / "t", model=model,
                                                                       **extra, **fast)))
    assert code == 0, out + err
    teacher = weights(str(tmp_path / "t" / f"{model}_last.pth"))
    classes = dataset.spec(name).num_classes
    assert [v.shape[0] for k, v in teacher.items() if v.dim() == 2][-1] == classes
    code, out, err = run_script("train_student.py", write_cfg(run_cfg(
        name, root, tmp_path / "s", model_s=model, model_t=model, path_t=str(tmp_path / "t" / f"{model}_last.pth"),
        distill="hint", beta=1.0, **extra)))
    assert code == 0, out + err
    log = (tmp_path / "s" / "log.txt").read_text()
    assert "epoch 1 " in log and " train_hint " in log


# --------------------------------------------------------------------------- bad data: one line, no run

def bad_imagenet(tmp_path, case):
    root = tmp_path / "bad"
    if case == "missing":
        return str(root)
    if case == "empty":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
    elif case == "mismatched classes":
        write_image_folder(str(root), ["n01", "n02"], 1, 1, 8, 8, val_wnids=["n01", "n03"])
    elif case == "class without images":
        write_image_folder(str(root), ["n01", "n02"], 1, 1, 8, 8)
        (root / "train" / "n03").mkdir()
        (root / "val" / "n03").mkdir()
    return str(root)


BAD = {
    "imagenet folder missing": (dict(dataset="imagenet"), "missing", "ImageNet: "),
    "imagenet folder empty": (dict(dataset="imagenet"), "empty", "holds no class folders"),
    "imagenet mismatched classes": (dict(dataset="imagenet"), "mismatched classes", "e.g. n02"),
    "imagenet class without images": (dict(dataset="imagenet"), "class without images", "n03"),
    "imagenet fast on the CPU": (dict(dataset="imagenet", fast=True), "ok", "set fast false"),
    "tiny_imagenet missing": (dict(dataset="tiny_imagenet"), "missing", "extract tiny-imagenet-200.zip"),
    "cifar10 missing": (dict(dataset="cifar10"), "missing", "CIFAR-10 not found"),
    "a model with a fixed 8x8 pooling at 64x64": (dict(dataset="tiny_imagenet", model="resnet8"), "ok",
                                                    "model resnet8 cannot take the 64x64 images of tiny_imagenet"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line(case, roots, tmp_path, write_cfg):
    extra, layout, expected = BAD[case]
    extra = dict(extra)
    name = extra.pop("dataset")
    root = roots[name] if layout == "ok" else bad_imagenet(tmp_path, layout)
    extra.setdefault("model", RUNS[name][0])
    run = tmp_path / "run"
    code, out, err = run_script("train_teacher.py", write_cfg(run_cfg(name, root, run, **extra)))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, out + err
    assert expected in err and "Traceback" not in out + err
    assert not run.exists()


def test_an_unreadable_image_in_a_loader_worker_is_one_line(tmp_path, write_cfg):
    root = write_image_folder(str(tmp_path / "data"), ["n01", "n02"], 2, 1, 20, 20)
    (tmp_path / "data" / "train" / "n01" / "n01_1.JPEG").write_bytes(b"not a JPEG")
    code, out, err = run_script("train_teacher.py", write_cfg(run_cfg(
        "imagenet", root, tmp_path / "run", model="MobileNetV1", batch_size=2, num_workers=1)))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, out + err
    assert err.startswith("error: cannot read image ") and "n01_1.JPEG" in err


def test_teacher_of_another_class_count_is_one_line(roots, tmp_path, write_cfg):
    path = tmp_path / "resnet8_cifar100.pth"
    torch.save({"model": model_dict["resnet8"](num_classes=100).state_dict()}, path)
    run = tmp_path / "run"
    code, out, err = run_script("train_student.py", write_cfg(run_cfg(
        "cifar10", roots["cifar10"], run, model_s="resnet8", model_t="resnet8", path_t=str(path))))
    assert code == 2 and err.count("\n") == 1, out + err
    assert "resnet8 (model_t) of 100 classes" in err and "the data set has 10" in err
    assert not run.exists()
