"""The distillation methods by config name (`distill`), and `build`.

The paper's files use kd, hint, attention, similarity, correlation, rkd, fsp, crd and ASKD;
the short names hkd, fitnet, at, sp, cc and askd are aliases; vanilla is plain cross-entropy
(teacher training, no teacher).
"""
from common.errors import UserError

from .abound import AB
from .askd import ASKD
from .at import AT
from .base import Distiller, Vanilla
from .cc import CC
from .crd import CRD
from .dkd import DKD
from .factor import FT
from .fitnet import FitNet
from .fsp import FSP
from .kd import HKD
from .kdsvd import KDSVD
from .nst import NST
from .ofd import OFD
from .pkt import PKT
from .reviewkd import ReviewKD
from .rkd import RKD
from .sp import SP
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
}


def distiller_names():
    """Every valid value of `distill`."""
    return list(METHODS)


def build(cfg, student, teacher=None, train_targets=None):
    """The distiller of `cfg.distill` for this pair: an nn.Module holding the student and the
    method's own trainable modules; the teacher stays outside its module tree."""
    cls = METHODS.get(cfg.distill)
    if cls is None:
        raise UserError(f"unknown method '{cfg.distill}': valid names are {', '.join(METHODS)}")
    if cls is not Vanilla and teacher is None:
        raise UserError(f"method '{cfg.distill}' needs a teacher (path_t)")
    return cls(student, teacher, cfg, train_targets)


__all__ = ["METHODS", "Distiller", "build", "distiller_names",
           "AB", "ASKD", "AT", "CC", "CRD", "DKD", "FSP", "FT", "FitNet", "HKD", "KDSVD", "NST", "OFD",
           "PKT", "RKD", "SP", "VID", "Vanilla"]
