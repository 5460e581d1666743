"""Atomic file writes: a file is either complete or absent, whatever happens mid-write; and
folders made for a download that failed taken away again."""
import contextlib
import errno
import os
import tempfile

from .errors import UserError


def fsync_dir(folder):
    """Make a rename in ``folder`` durable; silently skipped where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data, what="file"):
    """Write the bytes `data` to `path` atomically: a temporary file beside it, flushed and
    fsync'ed, then `os.replace`d onto `path`. Any OSError (disk full, unwritable folder, ...)
    removes the temporary file, leaves a previous `path` untouched and raises a UserError
    naming `what`, the path and the reason."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.',
                                   suffix='.tmp')
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        if e.errno == errno.ENOSPC:
            hint = 'free some disk space or choose another folder'
        else:
            hint = 'check that the folder exists and is writable, or choose another folder'
        raise UserError(f'could not save {what} {path}: {reason}; {hint}') from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(folder)


@contextlib.contextmanager
def no_empty_folders_left(path):
    """Within the block, the folders of `path` that do not exist yet may be made (a download's
    destination); when the block ends, those of them left empty are removed, deepest first. A
    folder that existed before, or that holds anything, is never removed."""
    made, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    try:
        yield
    finally:
        for folder in made:
            try:
                os.rmdir(folder)
            except FileNotFoundError:  # never made
                continue
            except OSError:  # holds something: so do the folders above it
                break
