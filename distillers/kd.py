"""HKD: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).

L = gamma * CE + alpha * T^2 KL(softmax(z_t / T) || softmax(z_s / T)), T = kd_T (4 in the paper).
The KD term is the base class's (weighted by alpha); the method adds no term of its own.
"""
from .base import Distiller


class HKD(Distiller):
    needs_feats = False
