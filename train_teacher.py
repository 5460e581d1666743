"""Train a model of the zoo from scratch (a teacher, or a vanilla student).

    python train_teacher.py -cfg configs/train_vanilla/resnet32x4.yaml [KEY VALUE ...]
"""
from helper.cli import parse_args, run_main
from helper.session import Session


def main():
    args = parse_args(__doc__.strip().splitlines()[0],
                      "python train_teacher.py -cfg configs/train_vanilla/resnet32x4.yaml")
    session = Session(args.cfg, args.overrides, script="teacher")
    model = session.build_model(session.cfg.model, session.cfg.model_kwargs)
    session.train(model, teacher=None)


if __name__ == "__main__":
    run_main(main)
