"""Small data sets written in the real on-disk layouts, for the tests and the loader benchmark:
CIFAR-10's pickles, a tiny-imagenet-200 tree and an ImageNet ImageFolder tree of JPEG files.
Images are smooth colour ramps with a per-image offset (JPEG-friendly, all different)."""
import os
import pickle

import numpy as np
from PIL import Image


def ramp(height, width, seed):
    """uint8 height x width x 3: three linear ramps, shifted by `seed`."""
    y, x = np.mgrid[0:height, 0:width]
    shift = (seed * 37) % 256
    channels = (x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y + shift) % 256)
    return ((np.stack(channels, -1) + shift) % 256).astype(np.uint8)


def write_jpeg(path, height, width, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(ramp(height, width, seed)).save(path, quality=90)


def write_cifar10(root, per_batch=4, test=10):
    """cifar-10-batches-py/ as torchvision's archive holds it: data_batch_1..5 (per_batch images
    each), test_batch, batches.meta; each a pickled dict of data (N x 3072, channel-major),
    labels, filenames, batch_label. Returns {file name: (data, labels)}."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        entry = {"batch_label": f"{name} of 5", "labels": labels, "data": data,
                 "filenames": [f"image_{name}_{i}.png" for i in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (data, labels)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"class_{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, f, protocol=2)
    return written


def write_tiny_imagenet(root, wnids, train_per_class=2, val_per_class=1, size=64):
    """root/tiny-imagenet-200/ as distributed: wnids.txt (in the given order), words.txt,
    train/<wnid>/images/<wnid>_<k>.JPEG + <wnid>_boxes.txt, val/images/val_<k>.JPEG +
    val_annotations.txt (file, wnid, box, tab-separated; val images of the classes in turn)."""
    home = os.path.join(root, "tiny-imagenet-200")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "wnids.txt"), "w") as f:
        f.write("".join(f"{w}\n" for w in wnids))
    with open(os.path.join(home, "words.txt"), "w") as f:
        f.write("".join(f"{w}\tthing {w}\n" for w in wnids))
    seed = 0
    for wnid in wnids:
        boxes = []
        for k in range(train_per_class):
            name = f"{wnid}_{k}.JPEG"
            write_jpeg(os.path.join(home, "train", wnid, "images", name), size, size, seed)
            boxes.append(f"{name}\t0\t0\t{size - 1}\t{size - 1}\n")
            seed += 1
        with open(os.path.join(home, "train", wnid, f"{wnid}_boxes.txt"), "w") as f:
            f.write("".join(boxes))
    rows = []
    for k in range(val_per_class * len(wnids)):
        wnid = wnids[k % len(wnids)]
        write_jpeg(os.path.join(home, "val", "images", f"val_{k}.JPEG"), size, size, seed)
        rows.append(f"val_{k}.JPEG\t{wnid}\t1\t2\t{size - 2}\t{size - 3}\n")
        seed += 1
    with open(os.path.join(home, "val", "val_annotations.txt"), "w") as f:
        f.write("".join(rows))
    return home


def write_image_folder(root, wnids, train_per_class=2, val_per_class=1, height=48, width=64,
                       val_wnids=None):
    """root/{train,val}/<wnid>/<wnid>_<k>.JPEG: ImageNet's ImageFolder layout (val/ may hold
    other classes: `val_wnids`)."""
    seed = 0
    for split, classes, per_class in (("train", wnids, train_per_class),
                                      ("val", val_wnids or wnids, val_per_class)):
        for wnid in classes:
            for k in range(per_class):
                write_jpeg(os.path.join(root, split, wnid, f"{wnid}_{k}.JPEG"), height, width, seed)
                seed += 1
    return root
