"""Score a checkpoint on the test split of its data set: top-1, top-5 and loss.

    python evaluate.py CKPT [-cfg FILE] [KEY VALUE ...] [--check]
    python evaluate.py CKPT --model NAME --dataset NAME [--json] [--batch-size N] [--device D]

CKPT: any checkpoint of a run folder (<model>_best.pth, <model>_last.pth, ckpt_epoch_N.pth,
latest.pth, and with model_ema <model>_ema_best.pth and <model>_ema_last.pth; latest.pth --ema: its
EMA weights; the model and data set are read from the run's config.yaml beside it), a released
CRD / mdistiller teacher, or torchvision's weights. Without a config the model is recognised by
its keys and the data set by its number of classes; --model and --dataset say it outright.
"""
import argparse
import json
import sys

from helper.check import check_evaluation
from helper.cli import run_main
from helper.evaluate import evaluate_checkpoint

EXAMPLE = ("example (the student of the README's quick start):\n"
           "  python evaluate.py save/quickstart/student/resnet8_best.pth --json")
CHECK_HELP = ("resolve the checkpoint, config, model and data set and load the model, then exit without "
              "scoring or writing anything. Exit status: 0 all found; 1 the checkpoint or a data set that "
              "cannot be downloaded is not there, each listed; 2 the one-line error of a wrong argument")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=EXAMPLE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint file (.pth)")
    parser.add_argument("-cfg", "--cfg", metavar="FILE", help="config (default: the run's config.yaml beside CKPT)")
    parser.add_argument("--model", help="architecture, a name of models.model_dict")
    parser.add_argument("--dataset", help="data set: cifar100, cifar10, tiny_imagenet, imagenet or synthetic")
    parser.add_argument("--batch-size", type=int, default=256, help="test batch size (default 256)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ema", action="store_true", help="score the EMA weights a latest.pth holds (model_ema)")
    parser.add_argument("--check", action="store_true", help=CHECK_HELP)
    parser.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. data_dir ./data")
    return parser.parse_intermixed_args(argv)  # options before, between or after the KEY VALUE pairs


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        return check_evaluation(args.checkpoint, args.cfg, args.overrides, args.model, args.dataset,
                                args.batch_size, args.device, args.ema)
    result = evaluate_checkpoint(args.checkpoint, args.cfg, args.overrides, args.model, args.dataset,
                                 args.batch_size, args.device, args.ema)
    if args.json:
        print(json.dumps(result))
    else:
        print(result["threads"])
        print(f"{result['model']} on {result['dataset']} ({result['images']} test images): "
              f"top-1 {result['top1']:.2f}  top-5 {result['top5']:.2f}  loss {result['loss']:.4f}")
    return 0


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
