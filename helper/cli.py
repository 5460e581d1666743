"""What both training scripts share: argument parsing, and turning a UserError into one line."""
import argparse
import sys
import warnings

from common.errors import UserError


def parse_args(description, example):
    parser = argparse.ArgumentParser(description=description,
                                     epilog=f"example: {example} epochs 1 batch_size 8")
    parser.add_argument("-cfg", "--cfg", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides after the file, e.g. epochs 1 batch_size 8")
    return parser.parse_args()


def run_main(main):
    """Call `main()`; a UserError becomes `error: ...` on stderr and a non-zero exit."""
    warnings.formatwarning = lambda message, category, *args, **kw: f"warning: {message}\n"
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(getattr(e, "exit_code", 2))
