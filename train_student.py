"""Distil a teacher of the zoo into a student with any of the methods (`distill`).

    python train_student.py -cfg configs/kds/ours/res32x4_shufflenetv2.yaml [KEY VALUE ...]
"""
from helper.checkpoint import load_teacher
from helper.cli import parse_args, run_main
from helper.session import Session
from helper.teachers import check_teacher_accuracy
from helper.trainer import evaluate


def main():
    args = parse_args(__doc__.strip().splitlines()[0],
                      "python train_student.py -cfg configs/kds/ours/res32x4_shufflenetv2.yaml")
    session = Session(args.cfg, args.overrides, script="student")
    cfg = session.cfg
    teacher = session.place(load_teacher(cfg.model_t, cfg.path_t, session.spec.num_classes), cfg.model_t)
    accuracy = evaluate(teacher, session.test_loader, session.device)
    session.log(f"teacher {cfg.model_t} from {cfg.path_t}: test top-1 {accuracy['top1']:.2f} "
                f"top-5 {accuracy['top5']:.2f}")
    warning = check_teacher_accuracy(cfg.model_t, accuracy["top1"], dataset=cfg.dataset)
    if warning:
        session.log(warning)
    student = session.build_model(cfg.model_s)
    session.train(student, teacher)


if __name__ == "__main__":
    run_main(main)
