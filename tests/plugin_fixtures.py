"""Plugin modules written by the tests into a folder on sys.path (one source text each)."""
import textwrap

UNUSED_PARAMETER = textwrap.dedent('''
    import torch.nn as nn
    from distillers.kd import HKD

    class Unused(HKD):
        """KD plus a linear layer its loss never uses."""
        def __init__(self, student, teacher, cfg, train_targets=None):
            super().__init__(student, teacher, cfg)
            self.forgotten = nn.Linear(4, 4)
    ''')

GOOD = textwrap.dedent('''
    import torch.nn.functional as F
    from common.knobs import Knob, positive
    from distillers.base import Distiller

    class LogitMSE(Distiller):
        """mse_weight * mean (z_s - z_t)^2."""
        knobs = (Knob("mse_weight", 1.0, "LogitMSE: weight of the logit MSE", positive),)
        needs_feats = False

        def method_losses(self, feats_s, logits_s, feats_t, logits_t, target, index):
            return {"logit_mse": self.cfg_weight * F.mse_loss(logits_s, logits_t)}

        def __init__(self, student, teacher, cfg, train_targets=None):
            super().__init__(student, teacher, cfg)
            self.cfg_weight = float(cfg.mse_weight)

    NOT_A_METHOD = 3

    def small_model(num_classes=100):
        from models import resnet8
        return resnet8(num_classes=num_classes)
    ''')

DATA_SET = textwrap.dedent('''
    import dataclasses
    from dataset.registry import SPECS

    # the synthetic set under another name and folder: the interface of dataset/registry.py
    SHAPES = dataclasses.replace(SPECS["synthetic"], name="shapes", default_dir="./data/shapes")
    ''')

SHADOWS_COMMON_KEY = textwrap.dedent('''
    from common.knobs import Knob
    from distillers.kd import HKD

    class Clash(HKD):
        knobs = (Knob("epochs", 3, "a knob named like a common key"),)
    ''')

REDEFINES_BUILTIN_KNOB = textwrap.dedent('''
    from common.knobs import Knob
    from distillers.kd import HKD

    class Clash(HKD):
        knobs = (Knob("nce_k", 5, "my own meaning of nce_k"),)
    ''')

BROKEN_IMPORT = "import no_such_module_anywhere\n"
