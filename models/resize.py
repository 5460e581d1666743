"""`teacher_input_size`: a teacher that takes another image size than the data set's."""
import torch.nn as nn
import torch.nn.functional as F


class ResizedInput(nn.Module):
    """`model` behind a resize of its input to `size` x `size` (bilinear, antialiased when
    shrinking, on the device), e.g. a 224-pixel ViT teacher over 32-pixel CIFAR images; the
    zoo's forward(x, is_feat, preact) passes through, and so does every other attribute."""

    def __init__(self, model, size):
        super().__init__()
        self.model, self.size = model, int(size)

    def forward(self, x, is_feat=False, preact=False, **contract):
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.model(x, is_feat=is_feat, preact=preact, **contract)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)
