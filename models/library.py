"""Any classification model of torchvision or timm, with the zoo's interface.

    model_s: torchvision:mobilenet_v3_small        # any name of torchvision.models.list_models()
    model_t: timm:vit_tiny_patch16_224             # any name of timm.list_models()

The model is the library's own module (its state-dict keys are the library's, so its weight
files and torchvision's / timm's checkpoints load strictly), built with the data set's class
count, the data set's image size where the model takes one (a ViT's `image_size` / `img_size`)
and the config's `model_*_kwargs`; its class is extended with the zoo's
`forward(x, is_feat=False, preact=False)`:

- `feats[-1]` is the pooled pre-logit vector (the input of the last linear layer), the entries
  before it the stage maps, NCHW, in the zoo's order (`feats[-2]` the last);
- torchvision: taken by torchvision's `feature_extraction` (an FX graph of the model): on the
  trunk (the nodes every path to the classifier passes through: block outputs, not the insides
  of residual or squeeze-excitation branches), where it leaves a module of the top two levels
  (`layer1.1`, `features.2`), the last such output of each spatial size, up to the map that the
  global pooling before the classifier reads; a model without such a pooling (torchvision's
  ViTs) gives no maps;
- timm: `forward_intermediates(output_fmt="NCHW")` (a ViT's tokens as maps), then
  `forward_head(pre_logits=True)` and `get_classifier()`.
- `pooled_map=True` adds the map the global pooling before the classifier reads (models/contract.py):
  timm's final features where they are a map, torchvision's pooled node, None for a ViT;
- `preact=True` cannot be given (there is no pre-activation output): `preact_features` is False
  and the methods that need them refuse the model in one line (distillers.build).

Pretrained weights come from `path_t` (helper/checkpoint.py): any local file, or the library's
own by name, from its local cache only.
"""
import torch
import torch.nn as nn

from common.errors import UserError

LIBRARIES = ("torchvision", "timm")
GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d)


def split_name(name):
    """('torchvision' | 'timm', model name), or None for a name of another form."""
    library, _, model = name.partition(":")
    return (library, model) if library in LIBRARIES and model else None


def check_name(library, name):
    if library == "timm":
        timm = require_timm()
        known = timm.list_models()
    else:
        import torchvision
        known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        import difflib
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean '{library}:{close[0]}'?)" if close else ""
        where = "timm.list_models()" if library == "timm" else "torchvision.models.list_models()"
        raise UserError(f"{library} has no classification model '{name}'{hint}: see {where}")


def require_timm():
    try:
        import timm
    except ImportError:
        raise UserError("timm is not installed: pip install timm (requirements.txt lists it)") from None
    return timm


class Constructor:
    """What `models.get_model('torchvision:NAME')` returns: called as the zoo's constructors are,
    with `num_classes`, and with the data set's `image_size` and the config's kwargs."""

    def __init__(self, library, name):
        check_name(library, name)
        self.library, self.name = library, name

    def __call__(self, num_classes=100, image_size=None, **kwargs):
        build = build_timm if self.library == "timm" else build_torchvision
        try:
            return build(self.name, num_classes, image_size, dict(kwargs))
        except (TypeError, ValueError) as e:  # arguments the model does not take
            raise UserError(f"{self.library}:{self.name} cannot be built with {kwargs or 'no extra arguments'} "
                            f"({str(e).splitlines()[0][:160]}): check model_*_kwargs") from None


def _with_size(create, kwargs, size_key, image_size):
    """(create(**kwargs), the kwargs it took): the image size passed to models that take one (a ViT's)."""
    if image_size is not None and size_key not in kwargs:
        try:
            return create(**kwargs, **{size_key: image_size}), {**kwargs, size_key: image_size}
        except TypeError as e:
            if size_key not in str(e):
                raise
    return create(**kwargs), kwargs


def build_torchvision(name, num_classes, image_size, kwargs):
    import torchvision
    net, taken = _with_size(lambda **kw: torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                                                      **kw), kwargs, "image_size", image_size)
    extractor, pooled_map = torchvision_features(net, image_size or 224)
    return adapt(net, TorchvisionForward, build_kwargs=taken, _features=(extractor,), pooled_map_key=pooled_map)


def build_timm(name, num_classes, image_size, kwargs):
    timm = require_timm()
    net, taken = _with_size(lambda **kw: timm.create_model(name, pretrained=False, num_classes=num_classes, **kw),
                            kwargs, "img_size", image_size)
    if not hasattr(net, "forward_intermediates"):
        raise UserError(f"timm model {name} has no forward_intermediates, which gives the stage maps the methods "
                        f"read: choose another model (timm >= 1.0 gives it for most)")
    return adapt(net, TimmForward, build_kwargs=taken)


def adapt(net, forward_class, **attributes):
    """`net` with the zoo's forward: its class extended by `forward_class`, its keys unchanged."""
    net.__class__ = type(type(net).__name__, (forward_class, type(net)), {})
    for key, value in attributes.items():
        setattr(net, key, value)  # plain attributes: tuples and strings are not submodules
    net.library_model = True
    return net


class TimmForward:
    preact_features = False
    ISOTROPIC_STAGES = (2, 4, 10, 12)  # stage ends in twelfths of the blocks: a 12-block ViT's 1, 3, 9, 11 (OFA-KD's)

    def stage_layout(self):
        """models/contract.py's StageLayout, decided once by what forward_intermediates gives: tokens
        ('NLC': a ViT or MLP-Mixer, its blocks split as Swin-T's 2-2-6-2; 'NHWC': Swin, its stages),
        else a CNN (its three deepest resolutions before the last, then the map the classifier pools)."""
        if getattr(self, "_stage_plan", None) is None:
            self._stage_plan = self._plan_stages()
        return self._stage_plan[0]

    @torch.no_grad()
    def _plan_stages(self):
        from .contract import StageLayout
        param = next(self.parameters())
        size = getattr(self, "input_size", None) or 224
        probe = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
        was_training = self.training
        self.eval()
        try:
            for fmt in ("NLC", "NHWC", "NCHW"):
                try:
                    maps = self.forward_intermediates(probe, output_fmt=fmt, intermediates_only=True)
                except (AssertionError, ValueError):  # a format the model does not give
                    continue
                if fmt == "NLC":
                    depth = len(maps)
                    indices = sorted({max(0, round(depth * k / 12) - 1) for k in self.ISOTROPIC_STAGES})
                    prefix = getattr(self, "num_prefix_tokens", 0)
                    return StageLayout("tokens", prefix, len(indices)), indices, fmt
                if fmt == "NHWC":
                    return StageLayout("tokens", 0, min(4, len(maps))), None, fmt
                return StageLayout("cnn", 0, min(4, len(maps))), None, fmt
        finally:
            self.train(was_training)

    def stage_outputs(self, x):
        """(the stage tensors of stage_layout(), the logits) of one pass through forward_intermediates
        (norm=False: the blocks' own outputs); a token model's tokens (B, L, D), prefix tokens first."""
        layout, indices, fmt = self.stage_layout(), *self._stage_plan[1:]
        if fmt == "NCHW":
            final, maps = self.forward_intermediates(x, norm=False, output_fmt=fmt)
            stages = [*maps[-layout.count:-1], final]
        elif fmt == "NHWC":
            final, maps = self.forward_intermediates(x, norm=False, output_fmt=fmt)
            stages = [m.flatten(1, 2) for m in maps[-layout.count:]]
        else:
            prefixed = {"return_prefix_tokens": True} if layout.prefix else {}
            final, maps = self.forward_intermediates(x, indices=indices, norm=False, output_fmt=fmt, **prefixed)
            stages = [torch.cat([prefix, tokens], dim=1) for tokens, prefix in maps] if layout.prefix else maps
        return stages, self.forward_head(final)

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        if preact:
            raise UserError("a timm model gives no pre-activation features")
        if not is_feat and not pooled_map:
            return super().forward(x)
        final, maps = self.forward_intermediates(x, output_fmt="NCHW")
        pooled = self.forward_head(final, pre_logits=True)
        feats, logits = [*maps, pooled], self.get_classifier()(pooled)
        return (feats, logits, final if final.dim() == 4 else None) if pooled_map else (feats, logits)


class TorchvisionForward:
    preact_features = False

    def forward(self, x, is_feat=False, preact=False, pooled_map=False):
        if preact:
            raise UserError("a torchvision model gives no pre-activation features")
        if not is_feat and not pooled_map:
            return super().forward(x)
        extractor = self._features[0]
        if extractor.training != self.training:
            extractor.train(self.training)
        out = extractor(x)
        maps = [out[key] for key in sorted(k for k in out if k.startswith("map"))]
        feats = [*maps, out["pre_logits"]]
        the_map = out[self.pooled_map_key] if self.pooled_map_key else None
        return (feats, out["logits"], the_map) if pooled_map else (feats, out["logits"])


def last_linear(net):
    names = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError(f"{type(net).__name__} has no linear classifier: not a classification model")
    return names[-1]


def _is_global_pool(node, net):
    if node.op == "call_module":
        return isinstance(net.get_submodule(node.target), GLOBAL_POOLS)
    if node.op == "call_function":
        return node.target in (torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
                               torch.nn.functional.avg_pool2d, torch.mean)
    return node.op == "call_method" and node.target == "mean"


def _block(name):
    return ".".join(name.split(".")[:2])


def cut_points(graph, end):
    """The nodes, up to `end`, that every path from the input to `end` passes through (block
    outputs; not the insides of a residual or squeeze-excitation branch), in graph order."""
    ancestors, stack = set(), [end]
    while stack:
        node = stack.pop()
        if node not in ancestors:
            ancestors.add(node)
            stack.extend(node.all_input_nodes)
    order = [n for n in graph.nodes if n in ancestors and n.op not in ("get_attr", "placeholder")]
    index = {n: i for i, n in enumerate(order)}
    reach, cuts = 0, []
    for i, node in enumerate(order):
        if reach <= i:  # no edge from an earlier node lands beyond this one
            cuts.append(node)
        reach = max([reach] + [index[user] for user in node.users if user in index])
    return cuts


@torch.no_grad()
def torchvision_features(net, size):
    """(feature extractor, the key of the map the global pooling reads, or None) of a torchvision
    model: torchvision's create_feature_extractor returning the stage maps ('map00', 'map01',
    ...), 'pre_logits', 'logits' and that map (one of the maps, or 'pooled_map')."""
    from torch import fx
    from torchvision.models import feature_extraction
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor
    was_training = net.training
    net.eval()
    tracer = NodePathTracer(**feature_extraction._set_default_tracer_kwargs(None))  # as create_feature_extractor
    graph = tracer.trace(net)
    names = tracer.node_to_qualname
    classifier = last_linear(net)
    call = next(n for n in graph.nodes if n.op == "call_module" and n.target == classifier)
    pre_logits = call.args[0]
    node, pooled_map = pre_logits, None
    while isinstance(node, fx.Node) and node.op != "placeholder":
        if _is_global_pool(node, net):
            pooled_map = node.args[0]
            break
        node = node.args[0] if node.args else None
    maps = []
    if pooled_map is not None:
        trunk = [names[n] for n in cut_points(graph, pooled_map) if n in names]
        # block outputs: where the trunk leaves a module of the top two levels (layer1.1, features.2)
        trunk = [name for i, name in enumerate(trunk) if i + 1 == len(trunk) or _block(trunk[i + 1]) != _block(name)]
        probe = create_feature_extractor(net, return_nodes=trunk)
        shapes = {name: tuple(v.shape) for name, v in probe(torch.zeros(1, 3, size, size)).items()
                  if torch.is_tensor(v)}
        spatial = [(name, shapes[name][2:]) for name in trunk if len(shapes.get(name, ())) == 4]
        maps = [name for i, (name, hw) in enumerate(spatial) if i + 1 == len(spatial) or spatial[i + 1][1] != hw]
    returns = {name: f"map{i:02d}" for i, name in enumerate(maps)}
    if pooled_map is not None:
        returns.setdefault(names[pooled_map], "pooled_map")  # (usually the last map itself)
    returns.update({names[pre_logits]: "pre_logits", classifier: "logits"})
    extractor = create_feature_extractor(net, return_nodes=returns)
    net.train(was_training)
    extractor.train(was_training)
    return extractor, returns[names[pooled_map]] if pooled_map is not None else None
