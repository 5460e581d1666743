"""Download the paper's pretrained CIFAR-100 teachers to where the configs look for them.

    python fetch_teachers.py                       # all teachers
    python fetch_teachers.py resnet32x4 wrn_40_2   # some of them
    python fetch_teachers.py --verify              # and check their test accuracy

Each teacher lands at <dest>/<NAME>_vanilla.pth once its sha256 checks out and it loads
as the right architecture; a second run downloads nothing.  --mirror URL (or
$ASKD_TEACHER_MIRROR) fetches everything from URL/<file part of the source>, e.g.
URL/cifar_teachers.tar or URL/resnet56_vanilla/ckpt_epoch_240.pth.
"""
import argparse
import sys

from common.errors import UserError
from helper.teachers import (DEFAULT_DEST, MIRROR_ENV, check_teacher_accuracy,  # noqa: F401
                             fetch_teachers, load_registry, published_top1)


def parse_args(argv=None):
    registry = load_registry()
    p = argparse.ArgumentParser(
        description='Download (and optionally verify) the pretrained CIFAR-100 teachers.',
        epilog=f'teachers: {", ".join(registry)}')
    p.add_argument('names', nargs='*', metavar='NAME', help='teachers to fetch (default: all)')
    p.add_argument('--dest', default=DEFAULT_DEST,
                   help=f'folder for <NAME>_vanilla.pth (default: {DEFAULT_DEST})')
    p.add_argument('--mirror', default=None, metavar='URL',
                   help=f'fetch every file from this base URL or folder instead '
                        f'(default: ${MIRROR_ENV} if set)')
    p.add_argument('--verify', action='store_true',
                   help='evaluate each teacher on the CIFAR-100 test set; fail if it is more '
                        'than 1 point below the published top-1')
    p.add_argument('--data_dir', default='./data/cifar100',
                   help='CIFAR-100 folder for --verify (downloaded there if missing)')
    p.add_argument('--batch_size', type=int, default=256, help='batch size for --verify')
    p.add_argument('--device', default=None, help='device for --verify (default: cuda if available)')
    p.add_argument('--timeout', type=float, default=30.0, help='network timeout in seconds')
    p.add_argument('--retries', type=int, default=3, help='retries per URL')
    return p.parse_args(argv)


def verify(paths, registry, data_dir, batch_size, device=None, log=print):
    """Evaluate each installed teacher; returns the names that fall short."""
    import torch

    from dataset import build_test_loader, prepare_data
    from helper.config import get_cfg_defaults
    from helper.checkpoint import load_teacher
    from helper.trainer import evaluate

    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.data_dir = 'cifar100', data_dir
    prepare_data(cfg)   # downloads CIFAR-100 when missing
    loader = build_test_loader(cfg, batch_size)
    bad = []
    for name, path in paths.items():
        arch = registry[name]['arch']
        model = load_teacher(arch, path, role=None if arch == name else f'teacher {name}').to(device)
        top1 = evaluate(model, loader, device)['top1']
        warning = check_teacher_accuracy(name, top1, registry)
        log(f'{name}: top-1 {top1:.2f}% (published {published_top1(name, registry):.2f}%)'
            + (' FAIL' if warning else ' ok'))
        if warning:
            print(warning, file=sys.stderr, flush=True)
            bad.append(name)
    return bad


def main(argv=None):
    try:
        args = parse_args(argv)
        registry = load_registry()
        paths = fetch_teachers(args.names, dest=args.dest, mirror=args.mirror, registry=registry,
                               timeout=args.timeout, retries=args.retries)
        if args.verify:
            bad = verify(paths, registry, args.data_dir, args.batch_size, args.device)
            if bad:
                print(f'error: {len(bad)} teacher(s) below the published accuracy: {", ".join(bad)}',
                      file=sys.stderr, flush=True)
                return 1
    except UserError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
