"""The data sets by name: everything the rest of the code needs to know of one.

    spec = dataset.spec("tiny_imagenet")
    spec.num_classes, spec.image_size, spec.mean, spec.std, spec.default_dir
    spec = dataset.data_spec(cfg)     the spec of a run: an ImageFolder tree's class count, size, mean, std
    spec.prepare(cfg, root)           download (CIFAR), generate (synthetic) or check; UserError if impossible
    spec.locate(cfg, root)            what prepare would find, writing nothing (--check): ("found" | "made" |
                                      "missing", a line); made: the run downloads or generates the files
    spec.read(root, "train"|"test")   an ImageArray / ImageFiles (dataset/images.py)
    spec.train_transform(), spec.test_transform()   PIL image -> normalised float tensor

`root` is `data_root(cfg)`: cfg.data_dir, or the spec's default_dir when data_dir is empty.
`pad` is the padding of the fast path's batched RandomCrop(image_size, padding=pad) for the
sets held on the device; 0 for ImageNet, whose fast path decodes JPEG files on the GPU.
"""
import dataclasses
from typing import Callable, Optional

from common.errors import UserError
from common.resolve import resolve

from . import cifar10, cifar100, imagefolder, imagenet, synthetic, tiny_imagenet
from .timm_transform import with_timm_transforms


@dataclasses.dataclass(frozen=True)
class DataSpec:
    name: str
    num_classes: int
    image_size: int            # side of the square training crop: the models' input
    mean: tuple
    std: tuple
    default_dir: str
    prepare: Callable          # (cfg, root) -> None
    read: Callable             # (root, split) -> ImageArray | ImageFiles
    train_transform: Callable  # () -> transform
    test_transform: Callable
    pad: int                   # fast path's crop padding; 0: not held on the device
    configure: Optional[Callable] = None  # (spec, cfg, root) -> the spec of this run's files and keys
    locate: Optional[Callable] = None     # (cfg, root) -> (state, line): --check; None: not checked


def checking(prepare):
    """The `locate` of a data set whose `prepare` only checks its files (nothing to download)."""
    def locate(cfg, root):
        try:
            prepare(cfg, root)
        except UserError as e:
            return "missing", str(e)
        return "found", f"in {root}"
    return locate


def _spec(name, module, default_dir, pad):
    return DataSpec(name, module.NUM_CLASSES, module.SIZE, module.MEAN, module.STD, default_dir,
                    module.prepare, module.read, module.train_transform, module.test_transform, pad,
                    locate=getattr(module, "locate", None) or checking(module.prepare))


_CIFAR100 = _spec("cifar100", cifar100, "./data/cifar100", pad=4)
SPECS = {spec.name: spec for spec in (
    _CIFAR100,
    _spec("cifar10", cifar10, "./data/cifar10", pad=4),
    _spec("tiny_imagenet", tiny_imagenet, "./data/tiny_imagenet", pad=tiny_imagenet.PAD),
    _spec("imagenet", imagenet, "./data/imagenet", pad=0),
    dataclasses.replace(_spec("imagefolder", imagefolder, "./data/imagefolder", pad=0),
                        configure=imagefolder.configure),
    # CIFAR-100's files, reader and transforms; written by the generator instead of downloaded
    dataclasses.replace(_CIFAR100, name="synthetic", default_dir="./data/synthetic", prepare=synthetic.prepare,
                        locate=synthetic.locate),
)}
NAMES = tuple(SPECS)


FIELDS = tuple(field.name for field in dataclasses.fields(DataSpec) if field.default is dataclasses.MISSING)


def _accept(obj):
    missing = [name for name in FIELDS if not hasattr(obj, name)]
    return f"not a data set: it lacks {', '.join(missing)} (see dataset/registry.py's DataSpec)" if missing else None


def spec_entry(name):
    """(spec, origin) of a data-set name: a built-in name, PACKAGE.MODULE:OBJECT (a DataSpec, or
    any object with its fields) or an installed package's entry point; origin None: built-in."""
    return resolve(name, SPECS, "dataset", _accept, key="dataset")


def spec(name):
    return spec_entry(name)[0]


def data_spec(cfg):
    """The spec of cfg's data set as this run sees it (`configure`d where the data set's class
    count or size comes from its files or keys: imagefolder), with timm's transforms and their
    image size under `transform timm` (dataset/timm_transform.py)."""
    found = spec(cfg.dataset)
    configure = getattr(found, "configure", None)
    found = configure(found, cfg, data_root(cfg)) if configure else found
    return with_timm_transforms(found, cfg) if cfg.get("transform", "crd") == "timm" else found


def data_root(cfg):
    """The folder of cfg's data set: data_dir, or the data set's default_dir when it is empty."""
    return cfg.data_dir or spec(cfg.dataset).default_dir
