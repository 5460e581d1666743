"""helper.checkpoint: atomic saving, weights-only loading, strict loading with a named architecture."""
import errno
import io
import os
import pickle
import pickletools

import numpy as np
import pytest
import torch

from helper import checkpoint as ck
from helper.checkpoint import (load_checkpoint, load_teacher, load_weights, model_state_dict,
                               save_atomic)
from common.errors import UserError
from models import model_dict


def _crd_optimizer_state(model):
    """An SGD state dict whose lr is a numpy.float64, as CRD's adjust_learning_rate left it."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = opt.state_dict()
    steps = np.sum(240 > np.asarray([150, 180, 210]))          # numpy.int64
    state['param_groups'][0]['lr'] = 0.05 * (0.1 ** steps)     # numpy.float64
    assert type(state['param_groups'][0]['lr']) is np.float64
    return state


def _legacy_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _as_numpy1(data):
    """Rewrite the numpy-2 module name of the scalar reconstructor into numpy 1.x's.

    numpy 2 pickles ``numpy.float64`` under ``numpy._core.multiarray.scalar``; the
    released teachers (numpy 1.x) say ``numpy.core.multiarray.scalar``.  Protocol 2 has no
    frames, so the GLOBAL opcode's text can change length."""
    new_name, old_name = b'numpy._core.multiarray\nscalar\n', b'numpy.core.multiarray\nscalar\n'
    assert new_name in data
    return data.replace(new_name, old_name)


def _globals_in(data):
    out = set()
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name == 'GLOBAL':
            out.add(arg.replace(' ', '.'))
    return out


@pytest.fixture(scope='module')
def r8():
    torch.manual_seed(0)
    return model_dict['resnet8'](num_classes=100)


# ----------------------------------------------------------------------------- save_atomic

def test_save_atomic_roundtrip(tmp_path, r8):
    path = tmp_path / 'sub' / 'ckpt.pth'
    save_atomic({'model': r8.state_dict(), 'epoch': 3}, path)
    assert load_checkpoint(path)['epoch'] == 3
    assert sorted(os.listdir(tmp_path / 'sub')) == ['ckpt.pth']


class _FullDisk(io.RawIOBase):
    """A file object that accepts a few bytes and then reports a full disk."""

    def __init__(self, real):
        self.real, self.n = real, 0

    def writable(self):
        return True

    def write(self, b):
        self.n += len(b)
        if self.n > 100:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return self.real.write(b)

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()
        super().close()


def test_save_atomic_disk_full_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    save_atomic({'epoch': 1, 'w': torch.ones(3)}, path)
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, 'fdopen', lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(UserError) as e:
        save_atomic({'epoch': 2, 'w': torch.zeros(1000)}, path)
    msg = str(e.value)
    assert str(path) in msg and 'No space left on device' in msg and '\n' not in msg
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['ckpt.pth']      # no temp file left behind


def test_save_atomic_unwritable_folder(tmp_path, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, 'Permission denied')
    monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    with pytest.raises(UserError, match='Permission denied') as e:
        save_atomic({'x': 1}, tmp_path / 'ckpt.pth')
    assert str(tmp_path / 'ckpt.pth') in str(e.value)


def test_save_atomic_failed_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    save_atomic({'epoch': 1}, path)
    before = path.read_bytes()

    def broken(*a):
        raise OSError(errno.EIO, 'Input/output error')
    monkeypatch.setattr(os, 'replace', broken)
    with pytest.raises(UserError, match='Input/output error'):
        save_atomic({'epoch': 2}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['ckpt.pth']


# ----------------------------------------------------------------------------- legacy files / numpy

def test_numpy2_pickles_scalar_under_private_name():
    # what the allow-list has to cover on this numpy
    names = _globals_in(pickle.dumps(np.float64(0.1), protocol=2))
    assert 'numpy._core.multiarray.scalar' in names and 'numpy.dtype' in names


@pytest.mark.parametrize('numpy1_names', [False, True])
def test_legacy_crd_checkpoint_with_numpy_scalars_loads(tmp_path, r8, numpy1_names):
    obj = {'epoch': 240, 'model': r8.state_dict(), 'optimizer': _crd_optimizer_state(r8)}
    data = _legacy_bytes(obj)
    assert not data.startswith(b'PK')            # legacy (non-zip) format
    if numpy1_names:
        data = _as_numpy1(data)
        assert b'numpy.core.multiarray\nscalar' in data and b'numpy._core' not in data
    path = tmp_path / 'ckpt_epoch_240.pth'
    path.write_bytes(data)
    before = torch.serialization.get_safe_globals()
    loaded = load_checkpoint(path)
    after = torch.serialization.get_safe_globals()           # allow-list not leaked
    assert all(g in after for g in before)
    assert not any(g in after for g in ck.NUMPY_SAFE_GLOBALS)
    lr = loaded['optimizer']['param_groups'][0]['lr']
    assert type(lr) is np.float64 and lr == pytest.approx(0.05e-3)
    model = load_teacher('resnet8', path)
    assert not model.training
    for k, v in r8.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_legacy_file_saved_from_gpu_loads_on_cpu(tmp_path, r8):
    # the released teachers were saved from CUDA tensors: torch.cuda.FloatStorage, 'cuda:0'
    data = _legacy_bytes({'model': r8.state_dict(), 'optimizer': _crd_optimizer_state(r8)})
    gpu = data.replace(b'ctorch\nFloatStorage\n', b'ctorch.cuda\nFloatStorage\n')
    gpu = gpu.replace(b'X\x03\x00\x00\x00cpu', b'X\x06\x00\x00\x00cuda:0')
    assert b'cuda:0' in gpu and b'cpu' not in gpu and b'torch.cuda\nFloatStorage' in gpu
    path = tmp_path / 'gpu.pth'
    path.write_bytes(_as_numpy1(gpu))
    model = load_teacher('resnet8', path)
    assert torch.equal(model.conv1.weight, r8.conv1.weight)


def test_plain_weights_only_refuses_crd_file_but_we_do_not(tmp_path, r8):
    path = tmp_path / 'c.pth'
    path.write_bytes(_as_numpy1(_legacy_bytes({'optimizer': _crd_optimizer_state(r8)})))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    load_checkpoint(path)


@pytest.mark.parametrize('value', [np.arange(3), np.float32(1.5)], ids=['ndarray', 'float32'])
def test_other_numpy_objects_stay_refused(tmp_path, value):
    path = tmp_path / 'arr.pth'
    torch.save({'a': value}, path)                 # not on the allow-list
    with pytest.raises(UserError, match='not weights-only'):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- code in pickles

class _WritesMarker:
    def __init__(self, marker, how):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == 'open':
            return (open, (self.marker, 'w'))
        return (exec, (f'open({self.marker!r}, "w").close()',))


@pytest.mark.parametrize('how', ['open', 'exec'])
@pytest.mark.parametrize('legacy', [False, True])
def test_pickle_that_would_run_code_is_refused(tmp_path, how, legacy):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.ones(1)}, 'x': _WritesMarker(str(marker), how)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and 'not weights-only' in msg and 'refused' in msg and '\n' not in msg
    assert not marker.exists()


# ----------------------------------------------------------------------------- broken files

def test_missing_file(tmp_path):
    with pytest.raises(UserError, match='does not exist') as e:
        load_checkpoint(tmp_path / 'nope.pth')
    assert str(tmp_path / 'nope.pth') in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(UserError, match='is a directory') as e:
        load_checkpoint(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_empty_file(tmp_path):
    path = tmp_path / 'empty.pth'
    path.write_bytes(b'')
    with pytest.raises(UserError, match='empty') as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize('legacy', [False, True])
@pytest.mark.parametrize('fraction', [0.003, 0.05, 0.5, 0.99])
def test_truncated_file(tmp_path, r8, legacy, fraction):
    full = tmp_path / 'full.pth'
    torch.save({'model': r8.state_dict()}, full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    path = tmp_path / 'cut.pth'
    path.write_bytes(data[:max(1, int(len(data) * fraction))])
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and ('corrupt' in msg or 'truncated' in msg) and '\n' not in msg


@pytest.mark.parametrize('legacy', [False, True])
def test_truncated_anywhere(tmp_path, legacy):
    # whatever torch.load trips over (EOFError, struct.error, RuntimeError, ...) is a UserError
    full = tmp_path / 'full.pth'
    torch.save({'model': {'a.weight': torch.ones(4, 4), 'a.bias': torch.ones(4)}, 'epoch': 3,
                'lr': np.float64(0.1)}, full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    path = tmp_path / 'cut.pth'
    for cut in sorted(set(range(1, 200)) | set(range(1, len(data), max(1, len(data) // 150)))):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match='cut.pth'):
            load_checkpoint(path)


def test_garbage_file(tmp_path):
    path = tmp_path / 'g.pth'
    path.write_bytes(b'this is not a checkpoint\n' * 50)
    with pytest.raises(UserError, match='corrupt') as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------- state dict shapes

def test_bare_state_dict_module_prefix_and_missing_num_batches_tracked(tmp_path, r8):
    sd = r8.state_dict()
    variants = {
        'bare': sd,
        'wrapped': {'model': sd, 'epoch': 1},
        'dataparallel': {'model': {'module.' + k: v for k, v in sd.items()}},
        'old_pytorch': {'model': {k: v for k, v in sd.items() if 'num_batches_tracked' not in k}},
        'all_at_once': {'module.' + k: v for k, v in sd.items() if 'num_batches_tracked' not in k},
    }
    for name, obj in variants.items():
        path = tmp_path / f'{name}.pth'
        torch.save(obj, path)
        model = load_teacher('resnet8', path)
        for k, v in sd.items():
            if 'num_batches_tracked' not in k:
                assert torch.equal(model.state_dict()[k], v), (name, k)


def test_model_state_dict_rejects_non_state_dicts():
    with pytest.raises(UserError, match='no model state dict'):
        model_state_dict({'epoch': 3, 'acc': 70.0}, 'x.pth')
    with pytest.raises(UserError, match='x.pth'):
        model_state_dict([1, 2], 'x.pth')


def test_wrong_architecture_is_named(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'resnet110_vanilla.pth'
    torch.save({'model': model_dict['resnet110'](num_classes=100).state_dict()}, path)
    with pytest.raises(UserError) as e:
        load_teacher('resnet32x4', path)
    msg = str(e.value)
    assert 'resnet110' in msg and 'not resnet32x4 (model_t)' in msg and str(path) in msg
    assert '\n' not in msg


def test_other_number_of_classes(tmp_path):
    path = tmp_path / 'c10.pth'
    torch.save({'model': model_dict['resnet8'](num_classes=10).state_dict()}, path)
    with pytest.raises(UserError, match='fc.weight') as e:
        load_teacher('resnet8', path)
    assert str(path) in str(e.value)


def test_unknown_layout(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'conv.weight': torch.zeros(3, 3)}, path)
    with pytest.raises(UserError, match='nor any known model'):
        load_teacher('resnet8', path)


def test_load_weights_extra_key(r8):
    sd = dict(r8.state_dict())
    sd['extra.weight'] = torch.zeros(2)
    model = model_dict['resnet8'](num_classes=100)
    with pytest.raises(UserError, match='unexpected key'):
        load_weights(model, sd, 'resnet8', 'p.pth')


def test_signatures_are_cached(tmp_path, monkeypatch):
    path = tmp_path / 'r20.pth'
    torch.save(model_dict['resnet20'](num_classes=100).state_dict(), path)
    with pytest.raises(UserError, match='resnet20'):
        load_teacher('resnet8', path)
    calls = []
    real = ck._build
    monkeypatch.setattr(ck, '_build', lambda *a: calls.append(a) or real(*a))
    with pytest.raises(UserError, match='resnet20'):
        load_teacher('resnet14', path)
    assert calls == []


def test_unknown_model_name(tmp_path):
    with pytest.raises(UserError, match='unknown model'):
        load_teacher('resnet9000', tmp_path / 'x.pth')
