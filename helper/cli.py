"""What both training scripts share: argument parsing, and turning a UserError into one line."""
import argparse
import sys
import warnings

from common.errors import UserError


def parse_args(description, example, argv=None):
    parser = argparse.ArgumentParser(description=description,
                                     epilog=f"example: {example} epochs 1 batch_size 8")
    parser.add_argument("-cfg", "--cfg", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides after the file, e.g. epochs 1 batch_size 8")
    return parser.parse_args(argv)


def one_line(error):
    """A UserError's message. One raised in a DataLoader worker (an unreadable image) arrives
    wrapped in the worker's traceback: its message is then the last line's."""
    text = str(error)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


def run_main(main):
    """Call `main()`; a UserError becomes `error: ...` on stderr and a non-zero exit."""
    warnings.formatwarning = lambda message, category, *args, **kw: f"warning: {message}\n"
    try:
        main()
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(getattr(e, "exit_code", 2))
