"""Run a method through the checks every method of this project passes (helper/battery.py).

    python check_method.py NAME [--pairs TEACHER:STUDENT ...] [--set KEY VALUE ...] [--json]

NAME: a built-in method (dkd, crd, ...), PACKAGE.MODULE:CLASS, or a name an installed package
registers. Small synthetic data on the CPU (about a minute a method); prints one line per check
and exits 0 when none fails, 1 otherwise.
"""
import argparse
import dataclasses
import json
import sys

from helper.cli import run_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     epilog="example: python check_method.py dkd --pairs resnet14:resnet8")
    parser.add_argument("method", metavar="NAME", help="a built-in method, PACKAGE.MODULE:CLASS, or a plugin's name")
    parser.add_argument("--pairs", nargs="+", metavar="TEACHER:STUDENT",
                        help="model pairs, a library's as timm:NAME (default: the method's check_pairs, else "
                             "resnet14:resnet8 wrn_16_2:ShuffleV1; the first one that builds runs the training checks)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a config value for every run of the battery (repeatable)")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process check")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv=None):
    import torch

    from common.resolve import add_plugin_paths
    from helper.battery import exit_status, parse_pair, run_battery, table
    args = parse_args(argv)
    pairs = [parse_pair(p) for p in args.pairs] if args.pairs else None
    torch.set_num_threads(1)
    add_plugin_paths()
    checks = run_battery(args.method, pairs, args.set, ddp=not args.no_ddp)
    if args.json:
        print(json.dumps({"method": args.method, "checks": [dataclasses.asdict(c) for c in checks],
                          "passed": exit_status(checks) == 0}))
    else:
        print(table(args.method, checks))
    return exit_status(checks)


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
