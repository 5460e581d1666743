"""Distil a teacher of the zoo into a student with any of the methods (`distill`).

    python train_student.py -cfg configs/kds/ours/res32x4_shufflenetv2.yaml [KEY VALUE ...] [--check]
"""
import sys

from helper.check import check_run
from helper.cli import parse_args, run_main
from helper.session import distil

EXAMPLE = ("example (one epoch beside the quick start's student, from its teacher, offline):\n"
           "  python train_student.py -cfg configs/quickstart/student.yaml epochs 1 lr_decay_epochs 1 trial smoke")


def main(argv=None):
    args = parse_args(__doc__.strip().splitlines()[0], EXAMPLE, argv)
    if args.check:
        return check_run(args.cfg, args.overrides, script="student")
    distil(args.cfg, args.overrides)
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
