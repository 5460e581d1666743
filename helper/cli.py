"""What the scripts share: the training scripts' arguments (--check among them), and turning a
UserError into one line."""
import argparse
import sys
import warnings

from common.errors import UserError


CHECK_HELP = ("validate the config, build the models and the method (parameter counts), say which run folder, "
              "data set files and teacher the run would use, then exit without training or writing anything "
              "(anywhere on the line). Exit status: 0 the run would start; 1 the config is valid but a file the "
              "run needs is not there (path_t, a data set it cannot download or generate) or its run folder would "
              "be refused, each listed; 2 the run's own one-line error (config, model, method)")


def parse_args(description, example, argv=None):
    """-cfg FILE, the KEY VALUE overrides and --check; `example`: the end of -h, a heading line and
    an indented command line that runs as written (tests/test_check.py runs it)."""
    parser = argparse.ArgumentParser(description=description, epilog=example,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-cfg", "--cfg", required=True, metavar="FILE", help="YAML config file")
    parser.add_argument("--check", action="store_true", help=CHECK_HELP)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides after the file, e.g. epochs 1 lr_decay_epochs 1")
    args = parser.parse_args(argv)
    if "--check" in args.overrides:  # typed after the overrides, which take the rest of the line
        args.check, args.overrides = True, [item for item in args.overrides if item != "--check"]
    return args


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
