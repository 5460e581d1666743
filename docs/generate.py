"""Write the reference tables of docs/ from the code, never by hand:

    python3 docs/generate.py           # rewrite the generated blocks of the pages
    python3 docs/generate.py --check   # exit 1, naming the pages, when one differs (tests/test_docs.py)

Each block lies between `<!-- BEGIN generated: NAME -->` and `<!-- END generated: NAME -->` in a page:
- keys (docs/config.md): every common key of helper/config.py's KEYS, its default and meaning; the
  `distill` row lists every name of the method registry, aliases beside their method;
- knobs (docs/config.md): every built-in method's knobs (common/knobs.py declarations): default,
  meaning, the rule that refuses a value, where tune.py searches it;
- methods (docs/methods.md): one section per method of the registry: its module's docstring (paper,
  original code, formula, refusals), what it reads of the teacher, what it asks of the batch, its knobs;
- models (docs/models.md): the zoo (models.model_dict): each model's parameter count and module.
"""
import argparse
import inspect
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BLOCK = re.compile(r"(<!-- BEGIN generated: (\w+) -->\n)(.*?)(<!-- END generated: \2 -->)", re.S)


def cell(value):
    """A default as a table shows it."""
    if isinstance(value, str):
        return f"`{value}`" if value else "`''`"
    if isinstance(value, list):
        return f"`{','.join(str(v) for v in value)}`" if value else "`''`"
    return f"`{json.dumps(value) if isinstance(value, dict) else value}`"


def method_names_text():
    """`abound` (`ab`), ...: every registered name of `distill`, each alias beside its method."""
    from distillers import METHODS, distiller_names, method_names
    parts = []
    for name in method_names():
        aliases = [a for a in distiller_names() if METHODS[a] is METHODS[name] and a != name]
        parts.append(f"`{name}`" + (f" ({', '.join(f'`{a}`' for a in aliases)})" if aliases else ""))
    return ", ".join(parts)


def keys():
    from helper.config import KEYS
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in KEYS:
        if key == "distill":
            doc = (f"method: {method_names_text()} (aliases in brackets; docs/methods.md), `vanilla` (cross-entropy "
                   f"alone: teachers), or a plugin")
        rows.append(f"| `{key}` | {cell(default)} | {doc} |")
    return "\n".join(rows)


def space_text(space):
    if space is None:
        return ""
    if space.kind == "choice":
        return "one of " + ", ".join(map(str, space.choices))
    return f"{space.kind} {space.low:g} to {space.high:g}"


def knobs():
    from common.knobs import declared_knobs
    from distillers import METHODS, method_names
    rows = ["| method | knob | default | meaning | refused unless | tune.py searches |", "|---|---|---|---|---|---|"]
    for name in method_names():
        for knob in declared_knobs(METHODS[name]).values():
            rows.append(f"| `{name}` | `{knob.name}` | {cell(knob.default)} | {knob.doc} | "
                        f"{knob.rule.text if knob.rule else ''} | {space_text(knob.space)} |")
    return "\n".join(rows)


def methods():
    from common.knobs import declared_knobs
    from distillers import METHODS, distiller_names, method_names
    out = []
    for name in method_names():
        cls = METHODS[name]
        aliases = [a for a in distiller_names() if METHODS[a] is cls and a != name]
        named = f" ({', '.join(f'`{a}`' for a in aliases)})" if aliases else ""
        title = f"### `{name}`{named}: {cls.__name__}"
        facts = [f"reads of the teacher: {', '.join(cls.teacher_reads)}" +
                 (" (the teacher cache may serve it)" if "feats" not in cls.teacher_reads else "")]
        if cls.min_batch > 1:
            facts.append(f"needs batches of {cls.min_batch} or more")
        if cls.preact or cls.teacher_preact:
            facts.append("reads pre-activation maps: library models refused")
        if cls.strong_view:
            facts.append("trains on a second, strongly augmented view of each image: the plain path only")
        if cls.teacher_train_mode:
            facts.append("runs the teacher in train mode")
        if cls.reads_labels.__func__ is not METHODS["kd"].reads_labels.__func__:
            facts.append("reads the labels: refused with Mixup and CutMix (for some settings)")
        if cls.check_pairs:
            facts.append("the battery's pairs: " + ", ".join(f"{t} -> {s}" for t, s in cls.check_pairs))
        doc = (sys.modules[cls.__module__].__doc__ or "").strip()
        block = [title, "", doc, "", *(f"- {fact}" for fact in facts), ""]
        knobs_of = list(declared_knobs(cls).values())
        if knobs_of:
            block += ["| knob | default | meaning |", "|---|---|---|"]
            block += [f"| `{k.name}` | {cell(k.default)} | {k.doc} |" for k in knobs_of]
            block.append("")
        block.append(f"Source: `{os.path.relpath(inspect.getfile(cls), ROOT)}`.")
        out.append("\n".join(block))
    return "\n\n".join(out)


def models():
    from models import model_dict
    rows = ["| model | parameters | classes | image side | defined in |", "|---|---:|---:|---:|---|"]
    for name, constructor in model_dict.items():
        size = getattr(constructor, "input_size", 32)
        classes = {224: 1000, 64: 200}.get(size, 100)
        model = constructor(num_classes=classes)
        count = sum(p.numel() for p in model.parameters())
        source = os.path.relpath(inspect.getfile(type(model)), ROOT)
        rows.append(f"| `{name}` | {count:,} | {classes} | {size} | `{source}` |")
    return "\n".join(rows)


BLOCKS = {"keys": keys, "knobs": knobs, "methods": methods, "models": models}


def render(text):
    """`text` with every generated block written anew."""
    return BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group(2)]() + "\n" + m.group(4), text)


def pages():
    folder = os.path.join(ROOT, "docs")
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".md")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in pages():
        with open(path) as f:
            text = f.read()
        new = render(text)
        if new != text:
            stale.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w") as f:
                    f.write(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}: run python3 docs/generate.py", file=sys.stderr)
        return 1
    print(f"{'out of date' if args.check else 'rewrote'}: {', '.join(stale)}" if stale else "docs/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
