"""Distil a teacher of the zoo into a student with any of the methods (`distill`).

    python train_student.py -cfg configs/kds/ours/res32x4_shufflenetv2.yaml [KEY VALUE ...]
"""
from helper.cli import parse_args, run_main
from helper.session import distil


def main(argv=None):
    args = parse_args(__doc__.strip().splitlines()[0],
                      "python train_student.py -cfg configs/kds/ours/res32x4_shufflenetv2.yaml", argv)
    distil(args.cfg, args.overrides)


if __name__ == "__main__":
    run_main(main)
