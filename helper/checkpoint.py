"""Saving and loading checkpoints safely.

* ``save_atomic`` never leaves a half-written checkpoint behind: the bytes go to a
  temporary file in the same folder, are fsync'ed and then renamed over the target.
* ``load_checkpoint`` only ever unpickles with ``weights_only=True``.  The released
  CRD teachers (PyTorch 0.4, legacy format) also carry the optimizer state whose
  decayed learning rate is a pickled ``numpy.float64``; exactly the numpy
  reconstructors needed for such scalars are allow-listed, nothing else.
* ``load_weights`` / ``load_teacher`` load strictly and, on a mismatch, say which
  architecture the file actually holds.
"""

import io
import os
import pickle
import re
from collections import OrderedDict

import numpy as np
import torch

from common.errors import UserError
from common.files import write_atomic

__all__ = [
    'save_atomic', 'load_checkpoint', 'model_state_dict', 'load_weights',
    'load_teacher', 'identify_architecture', 'NUMPY_SAFE_GLOBALS',
]


# ----------------------------------------------------------------------------- saving

def save_atomic(obj, path):
    """``torch.save(obj)`` to ``path`` atomically (`write_atomic`).

    Serializing in memory first keeps torch's own file writer (which turns OSError into an
    opaque RuntimeError) out of the picture: only plain Python I/O touches the disk."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getbuffer(), 'checkpoint')


# ----------------------------------------------------------------------------- loading

def _numpy_safe_globals():
    """The numpy reconstructors a pickled ``numpy.float64`` needs, nothing else.

    A numpy scalar pickles as ``numpy.core.multiarray.scalar(numpy.dtype('f8'), b'...')``
    (numpy 1.x module name; numpy 2 writes ``numpy._core.multiarray.scalar``) and the
    dtype is restored with BUILD, which the weights-only unpickler only allows for
    allow-listed types, hence the concrete dtype classes.  ``_codecs.encode`` (used for
    the raw bytes) is already allowed by torch.
    """
    scalar = np._core.multiarray.scalar
    entries = [
        (scalar, 'numpy.core.multiarray.scalar'),     # written by numpy 1.x (the CRD teachers)
        (scalar, 'numpy._core.multiarray.scalar'),    # written by numpy 2.x
        (np.dtype, 'numpy.dtype'),
    ]
    # the dtype class whose instance BUILD restores: float64, the decayed learning rate
    # (CRD's lr * 0.1 ** np.sum(...)) is the only numpy value in the released teachers
    entries.append((np.dtypes.Float64DType, 'numpy.dtypes.Float64DType'))
    return entries


NUMPY_SAFE_GLOBALS = _numpy_safe_globals()

# Messages of the weights-only unpickler that mean "this pickle wants to run code /
# build objects that are not plain data" rather than "these bytes are garbage".
_REFUSED_MARKERS = ('Unsupported global', 'is blocked', 'Can only build',
                    'Trying to call reduce', 'Trying to instantiate', 'not an allowed global')


def _short(msg, limit=160):
    msg = ' '.join(str(msg).split())
    return msg if len(msg) <= limit else msg[:limit - 3] + '...'


def load_checkpoint(path):
    """Load `path` on the CPU, weights only, with the CRD numpy scalars allowed.

    Every way the file can be wrong (missing, a directory, empty, truncated, corrupt,
    or a pickle that would run code) becomes a UserError naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f'checkpoint {path} does not exist: check the path '
                        f'(teachers can be fetched with `python fetch_teachers.py`)')
    if os.path.isdir(path):
        raise UserError(f'checkpoint {path} is a directory, not a file: give the path of the .pth file')
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise UserError(f'cannot read checkpoint {path}: {e.strerror or e}') from None
    if size == 0:
        raise UserError(f'checkpoint {path} is empty (0 bytes): delete it and save or download it again')
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if any(m in text for m in _REFUSED_MARKERS):
            m = re.search(r'GLOBAL (\S+)', text)
            what = f' (it references {m.group(1)})' if m else ''
            raise UserError(f'refused to load checkpoint {path}: it is not weights-only and unpickling '
                            f'it could run code{what}; only load files from a source you trust, '
                            f're-saved as plain state dicts') from None
        inner = text.split('WeightsUnpickler error:')[-1]
        raise UserError(f'checkpoint {path} is corrupt or not a PyTorch checkpoint ({_short(inner)}): '
                        f'delete it and save or download it again') from None
    except PermissionError as e:
        raise UserError(f'cannot read checkpoint {path}: {e.strerror or e}') from None
    except Exception as e:
        # What torch.load raises on truncated / garbled input varies with the byte where
        # the damage starts (EOFError, RuntimeError from the zip reader, struct.error,
        # IndexError, ...): all of them mean the file's bytes are bad.
        reason = _short(str(e).split('. ')[0])
        reason = f'{type(e).__name__}: {reason}' if reason else type(e).__name__
        raise UserError(f'checkpoint {path} is truncated or corrupt ({reason}): '
                        f'delete it and save or download it again') from None


def model_state_dict(obj, path=None):
    """The model weights inside a loaded checkpoint, without ``module.`` prefixes.

    Accepts ``{'model': state_dict, ...}`` (the CRD / our format), ``{'state_dict': ...}``
    or a bare state dict.
    """
    where = f'checkpoint {path}' if path is not None else 'the checkpoint'
    sd = None
    if isinstance(obj, dict):
        for key in ('model', 'state_dict'):
            if isinstance(obj.get(key), dict):
                sd = obj[key]
                break
        else:
            if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
                sd = obj
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        keys = ', '.join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f'{where} holds no model state dict (found: {keys or "nothing"}); '
                        f"expected {{'model': state_dict, ...}} or a bare state dict")
    out = OrderedDict()
    for k, v in sd.items():
        k = str(k)
        while k.startswith('module.'):
            k = k[len('module.'):]
        out[k] = v
    return out


# ----------------------------------------------------------------------------- architecture check

_SIGNATURES = {}   # (model name, num_classes) -> {key: shape}


def _is_nbt(key):
    return key.endswith('num_batches_tracked')


def _signature_of_state(sd):
    return {k: tuple(v.shape) for k, v in sd.items() if not _is_nbt(k)}


def _build(name, num_classes):
    from models import model_dict
    return model_dict[name](num_classes=num_classes)


def _model_signature(name, num_classes):
    key = (name, num_classes)
    if key not in _SIGNATURES:
        try:
            # shapes only: building on the meta device allocates nothing
            with torch.device('meta'):
                model = _build(name, num_classes)
        except Exception:
            model = _build(name, num_classes)
        _SIGNATURES[key] = _signature_of_state(model.state_dict())
    return _SIGNATURES[key]


def identify_architecture(state_dict, num_classes=100):
    """Names of the models in ``model_dict`` whose keys and shapes match ``state_dict``.

    Returns ``(exact, same_keys)``: models matching key names and shapes, and models
    matching only the key names (e.g. another number of classes).
    """
    from models import model_dict
    sig = _signature_of_state(state_dict)
    exact, same_keys = [], []
    for name in model_dict:
        try:
            msig = _model_signature(name, num_classes)
        except Exception:   # a model that cannot be built cannot be the answer
            continue
        if msig == sig:
            exact.append(name)
        elif msig.keys() == sig.keys():
            same_keys.append(name)
    return exact, same_keys


def _mismatch(model, sd):
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in sd.items()}
    missing = [k for k in mine if k not in theirs]
    unexpected = [k for k in theirs if k not in mine]
    shapes = [(k, theirs[k], mine[k]) for k in mine if k in theirs and theirs[k] != mine[k]]
    return missing, unexpected, shapes


def load_weights(model, state_dict, model_name, path, role=None):
    """Strictly load ``state_dict`` into ``model`` (a ``model_name``) read from ``path``.

    Only missing ``num_batches_tracked`` buffers (older PyTorch did not save them) are
    tolerated.  On any other mismatch the architecture the file really holds is looked
    up among all models and named in the UserError.
    """
    missing, unexpected, shapes = _mismatch(model, state_dict)
    missing_real = [k for k in missing if not _is_nbt(k)]
    if not missing_real and not unexpected and not shapes:
        model.load_state_dict(state_dict, strict=False)
        return model

    suffix = f' ({role})' if role else ''
    classifier = [k for k, v in model.state_dict().items() if v.dim() == 2][-1:]
    num_classes = model.state_dict()[classifier[0]].shape[0] if classifier else None
    if shapes and not missing_real and not unexpected and classifier and \
            {k for k, _, _ in shapes} <= {classifier[0], classifier[0][:-len('weight')] + 'bias'}:
        k, got, _ = shapes[0]
        raise UserError(f'{path} holds a {model_name}{suffix} of {got[0]} classes ({k} is {list(got)}), '
                        f'but the data set has {num_classes}: use a checkpoint trained on this data set')
    exact, same_keys = identify_architecture(state_dict, num_classes or 100)
    if model_name in exact:   # e.g. only a stray extra buffer; be explicit anyway
        exact = [n for n in exact if n != model_name]
    if exact:
        names = ' / '.join(exact)
        raise UserError(f'{path} looks like a {names} checkpoint, not {model_name}{suffix}: '
                        f'pass the matching model name or the right file')
    if shapes and not missing_real and not unexpected:
        k, got, want = shapes[0]
        raise UserError(f'{path} has the layout of {model_name}{suffix} but different sizes '
                        f'({k} is {list(got)}, {model_name} expects {list(want)}; '
                        f'{len(shapes)} tensor(s) differ): wrong number of classes or width, or a ViT built for another '
                        f'image size (teacher_input_size)?')
    if same_keys:
        names = ' / '.join(same_keys)
        raise UserError(f'{path} looks like a {names} checkpoint with other layer sizes, '
                        f'not {model_name}{suffix}: pass the matching model name or the right file')
    parts = []
    if missing_real:
        parts.append(f'{len(missing_real)} missing key(s), e.g. {missing_real[0]}')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}')
    if shapes:
        parts.append(f'{len(shapes)} shape mismatch(es), e.g. {shapes[0][0]}')
    raise UserError(f'{path} does not match {model_name}{suffix} nor any known model '
                    f'({"; ".join(parts)}): pass the matching model name or the right file')


def load_teacher(model_name, path, num_classes=100, role='model_t', image_size=None, kwargs=None):
    """Build ``model_name`` (for ``image_size``, with the constructor arguments ``kwargs``),
    load the weights from ``path`` and return it in eval mode. ``path``: a checkpoint file
    (``.safetensors`` too), or ``torchvision:WEIGHTS`` / ``timm:TAG`` for a library model's own
    pretrained weights, read from the library's local cache (models/pretrained.py)."""
    from models import build_model
    from models.library import split_name
    from models.pretrained import is_pretrained_name, pretrained_state_dict
    model = build_model(model_name, num_classes, image_size, kwargs, key=role)
    if is_pretrained_name(path):
        sd = pretrained_state_dict(split_name(model_name), path, model)
    elif str(path).endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            sd = model_state_dict(load_file(path), path)
        except OSError as e:
            raise UserError(f'cannot read {path} ({e})') from None
    else:
        sd = model_state_dict(load_checkpoint(path), path)
    load_weights(model, sd, model_name, path, role=role)
    model.eval()
    return model
