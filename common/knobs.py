"""A method's own config keys ("knobs"), declared on its class:

    class MyKD(Distiller):
        knobs = (Knob("my_weight", 1.0, "MyKD: weight of the cosine term", non_negative),)

The config accepts a knob when its method is selected, coerced to the type of its default;
a value its rule refuses is one line before any run folder exists, and the method battery
(helper/battery.py) checks that each rule's `violations` are refused. Two methods that declare
one name must mean the same thing by it (`Knob.meaning`): share the Knob object. A knob declared
`variant=True` (logit_stand, ctkd_over, sdd_base) names another method when it leaves its default:
sweep.py and report.py give such runs a row of their own (helper/grid.py `row_of`). A knob's `space`
(`log_range(0.5, 8)`, `linear_range`, `choices`) is where tune.py searches it, from its paper's ranges.
"""
import dataclasses
from typing import Any, Callable, Optional

from .errors import UserError


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a value must satisfy: `holds(value)`, said as `text`; `violations` are values that
    break it (the battery tries each)."""
    holds: Callable[[Any], bool]
    text: str
    violations: tuple


positive = Rule(lambda v: v > 0, "positive", (0, -1))
non_negative = Rule(lambda v: v >= 0, "non-negative", (-1,))


def at_least(low):
    return Rule(lambda v: v >= low, f"at least {low}", (low - 1,))


def in_range(low, high):
    """low <= value < high."""
    return Rule(lambda v: low <= v < high, f"in [{low}, {high})", (low - 1, high))


def one_of(*choices):
    return Rule(lambda v: v in choices, f"one of {', '.join(map(str, choices))}", ("no_such_choice",))


@dataclasses.dataclass(frozen=True)
class Space:
    """Where tune.py searches a knob: `kind` "log" or "linear" (floats in [low, high]), "int" (integers
    in [low, high]) or "choice" (one of `choices`)."""
    kind: str
    low: Any = None
    high: Any = None
    choices: tuple = ()

    def suggest(self, trial, name):
        """The value Optuna's `trial` proposes for the key `name`."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.kind == "log")


def log_range(low, high):
    return Space("log", low, high)


def linear_range(low, high):
    return Space("linear", low, high)


def choices(*values):
    return Space("choice", choices=values)


@dataclasses.dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    doc: str
    rule: Optional[Rule] = None
    variant: bool = False  # a value other than the default makes another method of the tables (report.py's rows)
    space: Optional[Space] = None  # where tune.py searches it (None: it keeps its value)

    @property
    def meaning(self):
        """What two declarations of one name must agree on."""
        default = tuple(self.default) if isinstance(self.default, list) else self.default  # (hashable)
        return type(self.default), default, self.doc, self.rule.text if self.rule else None

    def check(self, value, owner):
        if self.rule is not None and not self.rule.holds(value):
            raise UserError(f"'{self.name}' ({owner}'s knob) must be {self.rule.text}, got {value!r}")


def declared_knobs(cls):
    """{name: Knob} of a class and its bases (a subclass's declaration wins)."""
    knobs = {}
    for klass in reversed(cls.__mro__):
        for knob in klass.__dict__.get("knobs", ()):
            knobs[knob.name] = knob
    return knobs
