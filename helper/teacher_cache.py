"""The teacher cache (`teacher_cache auto|DIR`): the teacher's outputs for every view of every
training image that the fast path can draw, computed once and read back instead of running the
teacher.

CIFAR's training augmentation is RandomCrop(32, padding=4) + a horizontal flip: 9 x 9 offsets x
2 flips = 162 views per image (dataset/device_loader.py numbers them, `view_augmentation`), and
the fast path draws each image's view explicitly. For a method that declares it reads only the
teacher's logits (`teacher_reads = ("logits",)`: KD, DKD, DIST, NKD, TTM, WTTM, RLD, LumiNet,
CTKD, with logit standardisation or DOT) or its logits and pooled embedding `feats[-1]` (CRD,
CC, RKD, PKT, SRD), the teacher's forward of a batch is replaced by a gather of rows
`index * 162 + view` of the cache: the run computes what it computes with the teacher, up to the
rounding of a teacher forward over another batch (the cache is built by the same ops, on the
same device type, precision and memory format).

On disk, one folder per (teacher file's sha256, teacher model and its constructor arguments and
input size, the training images' sha256,
image size, padding, normalisation, device type, amp, channels_last):
`DIR/<model_t>-<hash of that key>/` with `key.json` (the key, and the shape and size of each
output file), `logits.npy` (float32 N x V x classes) and, when a method has asked for it,
`embedding.npy` (float32 N x V x the embedding's size). CIFAR-100: 3.24 GB of logits; the
embedding of resnet32x4 (256 values) 8.3 GB, of wrn_40_2 (128) 4.1 GB. A file is written under
a temporary name and renamed into place, and `key.json` lists it only after that, so a build
that is killed leaves nothing that is used: the next run removes the pieces and builds again.
A teacher file that changes has another sha256, hence another folder (the old one is left;
delete it when unused). One build at a time per folder (an OS file lock): the processes of a
sweep, or the ranks of a DDP run, that want the same cache wait for the first to build it.

What each process holds: on the CPU the files are memory-mapped, so every process of a machine
reads the same pages of the OS page cache (none holds a private copy); on CUDA each process
copies the cache onto its GPU (3.24 GB for CIFAR-100's logits), and refuses when that would take
more than half of the GPU's free memory.
"""
import fcntl
import hashlib
import json
import os
import shutil
import time

import numpy as np
import torch

from common.errors import UserError
from common.files import write_atomic
from dataset.device_loader import CropFlip, Normalize, combinations, view_augmentation
from dataset.registry import data_spec

from .logger import Progress
from .teachers import sha256_of
from .trainer import AMP_DTYPES

FORMAT = 1
OUTPUTS = ("logits", "embedding")  # what a cache can hold, in what `teacher_reads` calls them
DEFAULT_DIR = os.path.join("save", "teacher_cache")
# views per teacher forward while building (on one CPU thread resnet14 ran 1070 views/s in batches
# of 162, 740 in batches of 1024)
FORWARD_ROWS = {"cpu": 256, "cuda": 4096}


def check(cfg, method):
    """Refuse, in one line, a run whose teacher outputs a cache cannot serve exactly."""
    if cfg.teacher_cache == "off":
        return
    data_set = data_spec(cfg)
    name, reads = cfg.distill, tuple(method.teacher_reads)
    if method.strong_view:
        raise UserError(f"method '{name}' runs the teacher on a second, strongly augmented view of each image, "
                        f"which has no finite set of views to cache: set teacher_cache off")
    if cfg.mixup or cfg.cutmix:
        raise UserError("Mixup and CutMix show the teacher mixed images, which no cache of the data set's views "
                        "holds: set teacher_cache off")
    if method.teacher_train_mode:
        raise UserError(f"method '{name}' runs the teacher in train mode (batch statistics), so its outputs "
                        f"depend on the batch and cannot be cached: set teacher_cache off")
    if not set(reads) <= set(OUTPUTS):
        raise UserError(f"method '{name}' reads the teacher's features ({', '.join(reads)}), which the teacher "
                        f"cache does not hold (logits and the pooled embedding only): set teacher_cache off")
    if "embedding" in reads and (method.preact or method.teacher_preact):
        raise UserError(f"method '{name}' reads pre-activation features, which the teacher cache does not "
                        f"hold: set teacher_cache off")
    if not data_set.pad:
        raise UserError(f"data set {data_set.name}'s augmentation (random resized crop) has no finite set of "
                        f"views to cache: set teacher_cache off")
    if not cfg.fast:
        raise UserError("teacher_cache needs fast true: the fast path draws each image's crop and flip "
                        "explicitly, the plain path's PIL transforms do not say which view they made")


def cache_root(cfg):
    return DEFAULT_DIR if cfg.teacher_cache == "auto" else cfg.teacher_cache


def cache_key(cfg, data_set, images, device):
    """What the cached values depend on (images: the loader's uint8 N x 3 x S x S)."""
    data = hashlib.sha256(np.ascontiguousarray(images.cpu().numpy())).hexdigest()
    return {"format": FORMAT,
            "teacher": {"model": cfg.model_t, "kwargs": dict(cfg.model_t_kwargs),
                        # (a library's pretrained weights by name: its cache's file, named by that name)
                        "sha256": sha256_of(cfg.path_t) if os.path.isfile(cfg.path_t) else cfg.path_t,
                        "input_size": cfg.teacher_input_size},
            "data": {"images": int(images.shape[0]), "size": int(images.shape[-1]), "sha256": data,
                     "pad": data_set.pad, "mean": list(data_set.mean), "std": list(data_set.std)},
            "forward": {"device": device.type, "amp": cfg.amp, "channels_last": bool(cfg.channels_last)}}


def folder_of(root, key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(root, f"{key['teacher']['model'].replace(':', '.')}-{digest}")


def read_meta(folder):
    try:
        with open(os.path.join(folder, "key.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def missing_outputs(folder, key, outputs):
    """The outputs that `folder` does not hold complete for `key` (all of them when its key.json
    is missing, unreadable or for another key)."""
    meta = read_meta(folder)
    if meta is None or meta.get("key") != key:
        return list(outputs)
    missing = []
    for name in outputs:
        entry = meta.get("outputs", {}).get(name)
        path = os.path.join(folder, f"{name}.npy")
        if entry is None or not os.path.isfile(path) or os.path.getsize(path) != entry["bytes"]:
            missing.append(name)
    return missing


class TeacherCache:
    """`cache(index, view)` -> (feats_t, logits_t) as the teacher's forward would give them for
    those rows (`feats_t` = [embedding], or None when the cache holds logits only)."""

    def __init__(self, tables, shapes, dtype, views):
        self.tables, self.shapes, self.dtype, self.views = tables, shapes, dtype, views

    def __call__(self, index, view):
        rows = index * self.views + view
        out = {name: table.index_select(0, rows).view(-1, *self.shapes[name]).to(self.dtype)
               for name, table in self.tables.items()}
        return ([out["embedding"]] if "embedding" in out else None), out["logits"]

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.tables.values())


def open_cache(cfg, method, teacher, loader, data_set, device, log):
    """The TeacherCache of this run (built first when missing, stale or partial)."""
    outputs = [name for name in OUTPUTS if name in method.teacher_reads]
    images = loader.images
    key = cache_key(cfg, data_set, images, device)
    folder = folder_of(cache_root(cfg), key)
    views = combinations(data_set.pad)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then find it built
        missing = missing_outputs(folder, key, outputs)
        if missing:
            build(folder, key, missing, teacher, images, data_set, cfg, device, log)
        meta = read_meta(folder)
    tables, shapes = {}, {}
    for name in outputs:
        entry = meta["outputs"][name]
        array = np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="c")  # copy-on-write: never written
        tables[name] = place(torch.from_numpy(array).view(len(array) * views, -1), device, folder)
        shapes[name] = tuple(entry["shape"][2:])
    cache = TeacherCache(tables, shapes, getattr(torch, meta["dtype"]), views)
    held = ("memory-mapped, shared with every process reading it" if device.type == "cpu"
            else f"copied onto {device}")
    log(f"teacher cache {folder}: {', '.join(outputs)} of {len(images)} images x {views} views, "
        f"{cache.nbytes() / 1e9:.2f} GB, {held}")
    return cache


def place(table, device, folder):
    if device.type == "cpu":
        return table
    free = torch.cuda.mem_get_info(device)[0]
    size = table.numel() * table.element_size()
    if size > free / 2:
        raise UserError(f"the teacher cache {folder} ({size / 1e9:.2f} GB) would take more than half of the GPU's "
                        f"free memory ({free / 1e9:.2f} GB): set teacher_cache off")
    on_device = torch.empty(table.shape, dtype=table.dtype, device=device)
    rows = max(1, (1 << 26) // (table.shape[1] * table.element_size()))
    for lo in range(0, len(table), rows):
        on_device[lo:lo + rows].copy_(table[lo:lo + rows])
    return on_device


@torch.no_grad()
def build(folder, key, outputs, teacher, images, data_set, cfg, device, log):
    """Write `outputs` of the teacher for every view of every image into `folder`: each file
    under a temporary name, renamed into place, then listed in key.json."""
    meta = read_meta(folder)
    kept = {} if meta is None or meta.get("key") != key else {
        name: entry for name, entry in meta["outputs"].items() if name not in outputs}
    write_meta(folder, key, meta["dtype"] if kept else None, kept)  # lists only what stays valid meanwhile
    for name in os.listdir(folder):  # pieces of a build that was killed, and the outputs rebuilt now
        if name.endswith(".tmp") or name.endswith(".npy") and name[:-4] in outputs:
            os.remove(os.path.join(folder, name))
    views, n = combinations(data_set.pad), len(images)
    dy, dx, flip = view_augmentation(torch.arange(views, device=images.device), data_set.pad)
    crop, normalize = CropFlip(data_set.pad), Normalize(images.device, data_set.mean, data_set.std)
    per_forward = max(1, FORWARD_ROWS.get(device.type, 1024) // views)
    batches = -(-n // per_forward)
    teacher.eval()
    files, dtype = {}, None
    progress = Progress(batches, "teacher cache", max(1, batches // 20))
    start = time.time()
    log(f"teacher cache: building {folder} ({', '.join(outputs)} of {n} images x {views} views)")
    try:
        for b, lo in enumerate(range(0, n, per_forward)):
            chunk = images[lo:lo + per_forward]
            k = len(chunk)
            image = normalize(crop(chunk.repeat_interleave(views, 0), dy.repeat(k), dx.repeat(k), flip.repeat(k)))
            if cfg.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=AMP_DTYPES.get(cfg.amp), enabled=cfg.amp != "off"):
                feats, logits = teacher(image, is_feat=True)
            values = {"logits": logits, "embedding": feats[-1]}
            if not files:
                dtype = str(logits.dtype).replace("torch.", "")
                files = {name: open_output(folder, name, (n, views, *values[name].shape[1:])) for name in outputs}
            for name, (_, array) in files.items():
                array[lo:lo + k] = values[name].float().reshape(k, views, *array.shape[2:]).cpu().numpy()
            progress.update()
    finally:
        progress.close()
    entries = dict(kept)
    for name, (tmp, array) in files.items():
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = os.path.join(folder, f"{name}.npy")
        os.replace(tmp, final)
        entries[name] = {"shape": [n, views, *np.load(final, mmap_mode="r").shape[2:]],
                         "bytes": os.path.getsize(final)}
    write_meta(folder, key, dtype, entries)
    size = sum(e["bytes"] for name, e in entries.items() if name in outputs)
    log(f"teacher cache: built {', '.join(outputs)} in {time.time() - start:.1f} s ({size / 1e9:.2f} GB)")


def write_meta(folder, key, dtype, outputs):
    """key.json: the key, the teacher's output dtype and {output: {shape, bytes}} of the complete files."""
    write_atomic(os.path.join(folder, "key.json"),
                 json.dumps({"key": key, "dtype": dtype, "outputs": outputs}, indent=1).encode(), "teacher cache key")


def open_output(folder, name, shape):
    """(temporary path, float32 memmap of `shape`) for output `name`, refused when the disk cannot hold it."""
    size = 4 * int(np.prod(shape))
    free = shutil.disk_usage(folder).free
    if size > free:
        raise UserError(f"the teacher cache's {name} ({size / 1e9:.2f} GB) does not fit in the {free / 1e9:.2f} GB "
                        f"free under {folder}: free some space, set teacher_cache to another folder, or off")
    tmp = os.path.join(folder, f".{name}.npy.{os.getpid()}.tmp")
    return tmp, np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
