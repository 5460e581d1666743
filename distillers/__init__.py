"""The distillation methods by config name (`distill`), and `build`.

The paper's files use kd, hint, attention, similarity, correlation, rkd, fsp, crd and ASKD;
the short names hkd, fitnet, at, sp, cc and askd are aliases; vanilla is plain cross-entropy
(teacher training, no teacher).
"""
from common.errors import UserError
from common.knobs import declared_knobs
from common.resolve import resolve

from .abound import AB
from .askd import ASKD
from .at import AT
from .catkd import CATKD
from .base import Distiller, Vanilla
from .cc import CC
from .crd import CRD
from .ctkd import CTKD
from .deit import DeiT
from .dist import DIST
from .dkd import DKD
from .factor import FT
from .fitnet import FitNet
from .fsp import FSP
from .kd import HKD
from .kdsvd import KDSVD
from .luminet import LumiNet
from .mlkd import MLKD
from .nkd import NKD
from .nst import NST
from .ofa import OFA
from .ofd import OFD
from .pkt import PKT
from .reviewkd import ReviewKD
from .rkd import RKD
from .rld import RLD
from .sdd import SDD
from .simkd import SimKD
from .sp import SP
from .srd import SRD
from .ttm import TTM, WTTM
from .vid import VID

METHODS = {
    "vanilla": Vanilla,
    "abound": AB, "ab": AB,
    "factor": FT, "ft": FT,
    "kd": HKD, "hkd": HKD,
    "hint": FitNet, "fitnet": FitNet,
    "attention": AT, "at": AT,
    "similarity": SP, "sp": SP,
    "correlation": CC, "cc": CC,
    "rkd": RKD,
    "reviewkd": ReviewKD,
    "fsp": FSP,
    "crd": CRD,
    "dkd": DKD,
    "ofd": OFD,
    "vid": VID,
    "pkt": PKT,
    "nst": NST,
    "kdsvd": KDSVD,
    "ASKD": ASKD, "askd": ASKD,
    "dist": DIST,
    "ctkd": CTKD,
    "nkd": NKD,
    "ttm": TTM,
    "wttm": WTTM,
    "rld": RLD,
    "luminet": LumiNet,
    "mlkd": MLKD,
    "srd": SRD,
    "catkd": CATKD,
    "sdd": SDD,
    "simkd": SimKD,
    "ofa": OFA,
    "deit": DeiT,
}


def distiller_names():
    """Every built-in name of `distill`, aliases included."""
    return list(METHODS)


def method_names():
    """One name per built-in method (the first of its aliases), vanilla left out."""
    first = {}
    for name, cls in METHODS.items():
        first.setdefault(cls, name)
    return [name for cls, name in first.items() if cls is not Vanilla]


def _accept(obj):
    if isinstance(obj, type) and issubclass(obj, Distiller):
        return None
    return "not a subclass of distillers.base.Distiller"


def method_class(name):
    """(class, origin) of a `distill` value: a built-in name, PACKAGE.MODULE:CLASS or an
    installed package's entry point (common/resolve.py); origin is None for a built-in. A
    plugin's knobs must not redefine a built-in method's knob (`builtin_knob_owners`)."""
    cls, origin = resolve(name, METHODS, "method", _accept, key="distill")
    if origin is not None:
        owners = builtin_knob_owners()
        for knob in declared_knobs(cls).values():
            for owner, theirs in owners.get(knob.name, ()):
                if theirs.meaning != knob.meaning:
                    raise UserError(f"method '{name}' declares the knob '{knob.name}', which the built-in "
                                    f"method {owner} declares with another meaning: rename it")
    return cls, origin


def builtin_knob_owners():
    """{knob name: [(method name, Knob)]} over the built-in methods."""
    owners = {}
    for name in method_names():
        for knob in declared_knobs(METHODS[name]).values():
            owners.setdefault(knob.name, []).append((name, knob))
    return owners


def build(cfg, student, teacher=None, train_targets=None):
    """The distiller of `cfg.distill` for this pair: an nn.Module holding the student and the
    method's own trainable modules; the teacher stays outside its module tree."""
    cls, _ = method_class(cfg.distill)
    if cls is not Vanilla and teacher is None:
        raise UserError(f"method '{cfg.distill}' needs a teacher (path_t)")
    for role, model, needs in (("student", student, cls.preact), ("teacher", teacher, cls.preact or cls.teacher_preact)):
        if needs and not getattr(model, "preact_features", True):
            raise UserError(f"method '{cfg.distill}' reads the {role}'s pre-activation features, which "
                            f"{type(model).__name__} (a library model) does not give: choose another method or model")
    if "feats" in cls.teacher_reads:
        for role, model in (("student", student), ("teacher", teacher)):
            if getattr(model, "library_model", False) and len(Distiller.probe_feats(model)) < 2:
                raise UserError(f"method '{cfg.distill}' reads feature maps, which the {role} "
                                f"{type(model).__name__} gives none of (a torchvision ViT): choose another method or model")
    try:
        return cls(student, teacher, cfg, train_targets)
    except AttributeError as e:  # a zoo model's helper (get_feat_modules, get_bn_before_relu) that a model lacks
        library = [m for m in (student, teacher) if getattr(m, "library_model", False)]
        if not library:
            raise
        raise UserError(f"method '{cfg.distill}' needs what {type(library[0]).__name__} (a library model) does not "
                        f"give ({e}): choose another method or pair") from None


__all__ = ["METHODS", "Distiller", "build", "builtin_knob_owners", "distiller_names", "method_class", "method_names",
           "AB", "ASKD", "AT", "CATKD", "CC", "CRD", "CTKD", "DIST", "DKD", "DeiT", "FSP", "FT", "FitNet", "HKD", "KDSVD",
           "LumiNet", "MLKD", "NKD", "NST", "OFA", "OFD", "PKT", "RKD", "RLD", "SDD", "SP", "SRD", "SimKD", "TTM", "VID", "Vanilla", "WTTM"]
