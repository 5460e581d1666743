"""Download pretrained teachers to where the configs look for them: the paper's CIFAR-100 ones
and torchvision's ImageNet ResNet34/50 (IMAGENET1K_V1).

    python fetch_teachers.py                       # all CIFAR-100 teachers
    python fetch_teachers.py resnet32x4 wrn_40_2   # some of them
    python fetch_teachers.py --dataset imagenet    # resnet34_imagenet and resnet50_imagenet
    python fetch_teachers.py --verify              # and check their test accuracy
    python fetch_teachers.py -v                    # and say which URLs it downloads or tried

Each teacher lands at <dest>/<NAME>_vanilla.pth (default dest: save/teacher_model/<its data
set>) once its sha256 checks out (torchvision's: the prefix in its file name, then the full
digest recorded in the lock file) and it loads as the right architecture; a second run
downloads nothing.  --mirror URL (or
$ASKD_TEACHER_MIRROR) fetches everything from URL/<file part of the source>, e.g.
URL/cifar_teachers.tar or URL/resnet56_vanilla/ckpt_epoch_240.pth. A teacher that cannot be
fetched (offline, say) is one short line naming where to put its file (-v: with every URL tried);
a folder made for the teachers and left empty is removed again.
"""
import argparse
import sys

from common.errors import UserError
from helper.teachers import (MIRROR_ENV, check_teacher_accuracy, default_dest,  # noqa: F401
                             fetch_teachers, load_registry, published_top1, teacher_dataset)


def parse_args(argv=None):
    registry = load_registry()
    p = argparse.ArgumentParser(
        description='Download (and optionally verify) pretrained teachers.',
        epilog=f'teachers: {", ".join(registry)}')
    p.add_argument('names', nargs='*', metavar='NAME',
                   help='teachers to fetch (default: all those of --dataset)')
    p.add_argument('--dataset', default='cifar100',
                   help='without NAMEs, fetch the teachers of this data set (default: cifar100; imagenet)')
    p.add_argument('--dest', default=None,
                   help=f'folder for <NAME>_vanilla.pth (default: {default_dest("<data set>")})')
    p.add_argument('--mirror', default=None, metavar='URL',
                   help=f'fetch every file from this base URL or folder instead '
                        f'(default: ${MIRROR_ENV} if set)')
    p.add_argument('--verify', action='store_true',
                   help='evaluate each teacher on its data set\'s test split; fail if it is more '
                        'than 1 point below the published top-1')
    p.add_argument('--data_dir', default='',
                   help='data folder for --verify (default: ./data/<data set>; CIFAR is downloaded '
                        'there if missing)')
    p.add_argument('--batch_size', type=int, default=256, help='batch size for --verify')
    p.add_argument('--device', default=None, help='device for --verify (default: cuda if available)')
    p.add_argument('--timeout', type=float, default=30.0, help='network timeout in seconds')
    p.add_argument('--retries', type=int, default=3, help='retries per URL')
    p.add_argument('-v', '--verbose', action='store_true',
                   help='print the URL of each download, and every URL tried when a teacher fails')
    return p.parse_args(argv)


def verify(paths, registry, data_dir, batch_size, device=None, log=print):
    """Evaluate each installed teacher on its data set's test split; returns the names that fall short."""
    import dataset
    from helper.checkpoint import load_teacher
    from helper.evaluate import data_config, score
    from helper.trainer import pick_device

    device = pick_device(device or 'auto')
    bad = []
    for name, path in paths.items():
        arch, cfg = registry[name]['arch'], data_config(teacher_dataset(registry[name]), data_dir)
        model = load_teacher(arch, path, dataset.spec(cfg.dataset).num_classes,
                             role=None if arch == name else f'teacher {name}')
        top1 = score(model, cfg, device, batch_size)['top1']
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
        names = args.names or [n for n, spec in registry.items() if teacher_dataset(spec) == args.dataset]
        if not names:
            raise UserError(f'no teacher of data set {args.dataset!r}: the registry has teachers of '
                            f'{", ".join(sorted({teacher_dataset(spec) for spec in registry.values()}))}')
        paths = fetch_teachers(names, dest=args.dest, mirror=args.mirror, registry=registry,
                               timeout=args.timeout, retries=args.retries, verbose=args.verbose)
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
