"""One epoch of the CRD repository's own KD loop, for bench/threads.py to time beside ours.

    python bench/crd_loop.py --crd DIR --data DIR [--teacher resnet32x4] [--student resnet8x4]
                             [--batch-size 64] [--workers 0] [--print-freq 5]

DIR is a checkout of HobbitLong/RepDistiller (its code is run from there, not copied here):
its `get_cifar100_dataloaders(is_instance=True)` over the CIFAR-100 files in --data (read as they
are: the integrity check and download that its loader asks of torchvision are skipped, since the
bench's files are synthetic), its `model_dict` teacher and student (random weights), `DistillKL`
at T 4 and `train_distill` with the options its train_student.py gives KD (gamma 0.1, alpha 0.9,
beta 0, SGD lr 0.05, momentum 0.9, weight decay 5e-4). Torch's threads are left as torch sets
them, as its scripts do. It prints the loop's own progress lines (`Epoch: [1][idx/steps]` every
--print-freq steps) and is meant to be stopped once enough of them are out.
"""
import argparse
import os
import sys
from types import SimpleNamespace


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--crd", required=True, help="a checkout of HobbitLong/RepDistiller")
    parser.add_argument("--data", required=True, help="the folder holding cifar-100-python/")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--print-freq", type=int, default=5)
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.crd, "helper", "loops.py")):
        sys.exit(f"{args.crd} is not a checkout of HobbitLong/RepDistiller (no helper/loops.py)")
    sys.path.insert(0, os.path.abspath(args.crd))
    import torch.nn as nn
    import torch.optim as optim
    from torchvision import datasets
    from torchvision.datasets import cifar

    import dataset.cifar100 as crd_data
    from distiller_zoo import DistillKL
    from helper.loops import train_distill
    from models import model_dict

    crd_data.get_data_folder = lambda: args.data
    datasets.CIFAR100.download = lambda self: None
    cifar.check_integrity = lambda path, md5=None: os.path.isfile(path)
    train_loader, _, _ = crd_data.get_cifar100_dataloaders(batch_size=args.batch_size, num_workers=args.workers,
                                                           is_instance=True)
    model_s, model_t = model_dict[args.student](num_classes=100), model_dict[args.teacher](num_classes=100)
    module_list = nn.ModuleList([model_s, model_t])
    criterion_list = nn.ModuleList([nn.CrossEntropyLoss(), DistillKL(4), DistillKL(4)])
    optimizer = optim.SGD(model_s.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    opt = SimpleNamespace(distill="kd", gamma=0.1, alpha=0.9, beta=0.0, print_freq=args.print_freq)
    train_distill(1, train_loader, module_list, criterion_list, optimizer, opt)


if __name__ == "__main__":
    main()
