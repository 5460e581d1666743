"""Train a model of the zoo from scratch (a teacher, or a vanilla student).

    python train_teacher.py -cfg configs/train_vanilla/resnet32x4.yaml [KEY VALUE ...] [--check]
"""
import sys

from helper.check import check_run
from helper.cli import parse_args, run_main
from helper.session import Session

EXAMPLE = ("example (one epoch beside the quick start's teacher, offline):\n"
           "  python train_teacher.py -cfg configs/quickstart/teacher.yaml epochs 1 lr_decay_epochs 1 trial smoke")


def main(argv=None):
    args = parse_args(__doc__.strip().splitlines()[0], EXAMPLE, argv)
    if args.check:
        return check_run(args.cfg, args.overrides, script="teacher")
    session = Session(args.cfg, args.overrides, script="teacher")
    model = session.build_model(session.cfg.model, session.cfg.model_kwargs)
    session.train(model, teacher=None)
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
