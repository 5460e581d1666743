"""What the models of the zoo share: running their stages and the shape of their output."""


def run_stages(x, stages):
    """`x` through stages that each return (output, output before its last ReLU):
    (final output, [outputs], [pre-activation outputs])."""
    feats, preacts = [], []
    for stage in stages:
        x, pre = stage(x)
        feats.append(x)
        preacts.append(pre)
    return x, feats, preacts


def zoo_output(logits, feats, preact_feats, is_feat, preact):
    """`forward(x, is_feat, preact)` of every model: the logits, or (features, logits)."""
    if not is_feat:
        return logits
    return (preact_feats if preact else feats), logits
