"""tiny_cnn: a small CNN with the zoo's interface, for 32x32 images.

`forward(x, is_feat=False, preact=False)` returns the logits, or `(feats, logits)` with
`is_feat=True`: feats = [stem map, stage-1 map, stage-2 map, pooled embedding]
(`feats[-2]` the last map, `feats[-1]` the pooled vector, as every model of the zoo).
It has no pre-activation maps: `preact` is accepted and ignored, so methods that need them
should not be paired with it.
"""
import torch.nn as nn
import torch.nn.functional as F


def _block(c_in, c_out, stride):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class TinyCNN(nn.Module):
    def __init__(self, num_classes=100, width=16):
        super().__init__()
        self.stem = _block(3, width, 1)
        self.stage1 = _block(width, 2 * width, 2)
        self.stage2 = _block(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x, is_feat=False, preact=False):
        f0 = self.stem(x)
        f1 = self.stage1(f0)
        f2 = self.stage2(f1)
        pooled = F.adaptive_avg_pool2d(f2, 1).flatten(1)
        logits = self.fc(pooled)
        return ([f0, f1, f2, pooled], logits) if is_feat else logits


def tiny_cnn(num_classes=100):
    return TinyCNN(num_classes)
