"""Pretrained teachers: the paper's CIFAR-100 ones and torchvision's ImageNet ResNets; registry,
download, verification.

The registry (``helper/teachers.json``) lists, for each teacher, its architecture, its data set
(``dataset``, default cifar100), the published test top-1 and its sources in order of
preference.  A source is
``base + path`` (``--mirror M`` / ``$ASKD_TEACHER_MIRROR`` turns it into ``M/path``);
a source with a ``member`` is a tar archive holding the checkpoint under that name.

Downloads use only the standard library: timeouts, retries with exponential backoff,
resume of a partial ``.part`` file with an HTTP Range request, and the file is renamed
into place only once its sha256 matches (the registry's, which may be a hex prefix as in
torchvision's file names, and the one recorded in ``<dest>/teachers.lock.json`` by the first
verified download) and it loads as the right architecture with its data set's classes.  Tar members are streamed out by name (never ``extractall``) and the
whole archive is refused if any member has an absolute path, a ``..`` component, or is
a link or device pointing out of it.  A teacher already installed is not downloaded again.
"""

import contextlib
import hashlib
import http.client
import json
import os
import posixpath
import re
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request

from common.files import fsync_dir, no_empty_folders_left, write_atomic
from common.errors import UserError

REGISTRY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'teachers.json')
DEFAULT_DEST = os.path.join('save', 'teacher_model', 'cifar100')   # of the CIFAR-100 teachers
LOCK_NAME = 'teachers.lock.json'
MIRROR_ENV = 'ASKD_TEACHER_MIRROR'
ACCURACY_TOLERANCE = 1.0   # points of top-1 a teacher may lose against the published figure

_CHUNK = 1 << 16
_USER_AGENT = 'askd-fetch-teachers/1.0 (python-urllib)'

__all__ = ['load_registry', 'teacher_file', 'teacher_dataset', 'default_dest', 'source_url',
           'fetch_teachers', 'download',
           'extract_member',
           'check_teacher_accuracy', 'published_top1', 'sha256_of',
           'REGISTRY_PATH', 'DEFAULT_DEST', 'LOCK_NAME', 'MIRROR_ENV']


# ----------------------------------------------------------------------------- registry

def load_registry(path=REGISTRY_PATH):
    """The teachers of ``teachers.json`` as ``{name: {arch, top1, sha256, sources[, dataset]}}``."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read the teacher registry {path}: {e}') from None
    teachers = data.get('teachers') if isinstance(data, dict) else None
    if not isinstance(teachers, dict) or not teachers:
        raise UserError(f'teacher registry {path} has no "teachers" table')
    for name, spec in teachers.items():
        _check_spec(name, spec, path)
    return teachers


def _check_spec(name, spec, where):
    ok = (isinstance(spec, dict) and isinstance(spec.get('arch'), str)
          and isinstance(spec.get('top1'), (int, float))
          and (spec.get('sha256') is None or re.fullmatch(r'[0-9a-f]{8,64}', str(spec['sha256'])))
          and isinstance(spec.get('dataset', 'cifar100'), str)
          and isinstance(spec.get('sources'), list) and spec['sources']
          and all(isinstance(s, dict) and isinstance(s.get('base'), str)
                  and isinstance(s.get('path'), str) for s in spec['sources']))
    if not ok:
        raise UserError(f'teacher registry {where}: entry {name!r} needs arch, top1, sha256 '
                        f'(64 hex digits, a prefix of at least 8, or null) and a list of sources '
                        f'with base and path')


def teacher_dataset(spec):
    """The data set a registry teacher was trained on (and is verified on)."""
    return spec.get('dataset', 'cifar100')


def default_dest(dataset):
    """Where the teachers of ``dataset`` go by default: ``save/teacher_model/<dataset>``."""
    return os.path.join('save', 'teacher_model', dataset)


def published_top1(name, registry=None):
    """The published test top-1 of teacher ``name`` on its data set (percent), or None."""
    registry = load_registry() if registry is None else registry
    spec = registry.get(name)
    return float(spec['top1']) if spec else None


def check_teacher_accuracy(model_name, top1, registry=None, tolerance=ACCURACY_TOLERANCE, dataset=None):
    """A loud warning if ``top1`` (percent) is more than ``tolerance`` points below the
    published figure of teacher ``model_name``; None when it is fine, not a known teacher, or
    (``dataset`` given) measured on another data set than the published figure's."""
    registry = load_registry() if registry is None else registry
    published = published_top1(model_name, registry)
    if published is None or top1 >= published - tolerance:
        return None
    if dataset is not None and dataset != teacher_dataset(registry[model_name]):
        return None
    dataset = teacher_dataset(registry[model_name])
    return (f'WARNING: teacher {model_name} scores {top1:.2f}% top-1 on the {dataset} test set, '
            f'{published - top1:.2f} points below the published {published:.2f}%: the checkpoint is '
            f'probably wrong or damaged; results distilled from it will not match the paper '
            f'(re-fetch it with `python fetch_teachers.py {model_name} --verify`)')


def teacher_file(dest, name):
    """Where teacher ``name`` is installed: ``<dest>/<name>_vanilla.pth``."""
    return os.path.join(dest, f'{name}_vanilla.pth')


def _normalize_mirror(mirror):
    if not mirror:
        return None
    mirror = str(mirror).strip()
    scheme = urllib.parse.urlsplit(mirror).scheme.lower()
    if scheme in ('http', 'https', 'file'):
        return mirror.rstrip('/')
    if os.path.isdir(mirror):    # a local folder laid out like the mirror
        return 'file://' + urllib.request.pathname2url(os.path.abspath(mirror)).rstrip('/')
    raise UserError(f'mirror {mirror!r} is neither an http(s):// or file:// URL nor an existing '
                    f'folder: pass e.g. --mirror https://host/teachers')


def source_url(source, mirror=None):
    """The URL of a registry source, relative to ``mirror`` when one is given."""
    if mirror:
        return mirror.rstrip('/') + '/' + source['path'].lstrip('/')
    return source['base'] + source['path']


# ----------------------------------------------------------------------------- small helpers

class _SourceFailed(Exception):
    """One source did not yield a good file: its URL, why (one line), and whether the network
    failed (no route, no name, refused, timed out) rather than the server or the file."""

    def __init__(self, url, reason, network=False):
        super().__init__(f'{url} ({reason})')
        self.url, self.reason, self.network = url, reason, network


class _Retryable(Exception):
    pass


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _remove(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(p, ignore_errors=True)


def _local_io(what, path, e):
    return UserError(f'cannot {what} {path}: {e.strerror or e}; check free space and permissions '
                     f'of the destination folder')


class _Lock:
    """``<dest>/teachers.lock.json``: sha256 of every verified teacher file and archive."""

    def __init__(self, dest):
        self.path = os.path.join(dest, LOCK_NAME)
        self.data = {'version': 1, 'teachers': {}, 'archives': {}}
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding='utf-8') as f:
                    data = json.load(f)
                assert isinstance(data.get('teachers'), dict) and isinstance(data.get('archives'), dict)
            except (OSError, ValueError, AssertionError, AttributeError):
                raise UserError(f'lock file {self.path} is unreadable or corrupt: fix it or delete it '
                                f'(the hashes will then be recorded again)') from None
            self.data = data

    def teacher(self, name):
        return (self.data['teachers'].get(name) or {}).get('sha256')

    def archive(self, name):
        return (self.data['archives'].get(name) or {}).get('sha256')

    def record(self, table, name, digest, size, url):
        entry = self.data[table].get(name) or {}
        if entry.get('sha256') == digest:
            return
        self.data[table][name] = {'sha256': digest, 'size': size, 'source': url,
                                  'recorded': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
        text = json.dumps(self.data, indent=2, sort_keys=True) + '\n'
        write_atomic(self.path, text.encode('utf-8'), 'the lock file')


# ----------------------------------------------------------------------------- HTTP download

def _content_range(value):
    """``bytes a-b/total`` or ``bytes */total`` -> (a or None, total or None)."""
    m = re.fullmatch(r'\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*', value or '')
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != '*' else None
    return start, total


def _read_meta(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _reason(e):
    if isinstance(e, urllib.error.HTTPError):
        return f'HTTP {e.code} {e.reason}'.strip()
    if isinstance(e, urllib.error.URLError):
        r = e.reason
        if isinstance(r, OSError) and r.strerror:
            return r.strerror
        return str(r)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return 'timed out'
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def download(url, part, *, timeout=30.0, retries=3, backoff=1.0, progress=True, label=None):
    """Download ``url`` into ``part``, resuming what ``part`` already holds.

    A partial ``part`` (with its ``part.json`` note of the URL, size and validator) is
    resumed with ``Range``; a server that ignores the range restarts it.  Network errors,
    timeouts, dropped connections and 5xx answers are retried ``retries`` times with
    exponential backoff (the count restarts whenever a try made progress).  404 and other
    4xx answers fail at once.  Raises ``_SourceFailed`` with a one-line reason.
    """
    from tqdm import tqdm

    meta_path = part + '.json'
    failures = 0
    while True:
        meta = _read_meta(meta_path)
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        if have and meta.get('url') != url:      # a leftover from another source: start over
            _remove(part)
            have = 0
        request = urllib.request.Request(url, headers={'User-Agent': _USER_AGENT,
                                                       'Accept-Encoding': 'identity'})
        if have:
            request.add_header('Range', f'bytes={have}-')
            if meta.get('validator'):
                request.add_header('If-Range', meta['validator'])
        before = have
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status = getattr(resp, 'status', None) or 200
                headers = resp.headers
                length = headers.get('Content-Length')
                length = int(length) if length and length.isdigit() else None
                if status == 206 and have:
                    start, total = _content_range(headers.get('Content-Range'))
                    if start != have or (meta.get('total') and total and total != meta['total']):
                        _remove(part, meta_path)     # not the continuation we asked for
                        raise _Retryable('server answered an unexpected range')
                    mode = 'ab'
                else:
                    have, total, mode = 0, length, 'wb'
                validator = headers.get('ETag') or headers.get('Last-Modified')
                try:
                    with open(meta_path, 'w', encoding='utf-8') as f:
                        json.dump({'url': url, 'total': total, 'validator': validator}, f)
                    f = open(part, mode)
                except OSError as e:
                    raise _local_io('write', part, e) from None
                with f, tqdm(total=total, initial=have, unit='B', unit_scale=True,
                             unit_divisor=1024, desc=label or os.path.basename(part),
                             disable=None if progress else True, leave=False,
                             file=sys.stderr) as bar:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        try:
                            f.write(chunk)
                        except OSError as e:
                            raise _local_io('write', part, e) from None
                        bar.update(len(chunk))
                        have += len(chunk)
                if total is not None and have < total:
                    raise _Retryable(f'connection closed after {have} of {total} bytes')
                if total is not None and have > total:
                    _remove(part, meta_path)
                    raise _Retryable(f'received {have} bytes, more than the announced {total}')
            _remove(meta_path)
            return
        except UserError:
            raise
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                _, total = _content_range(e.headers.get('Content-Range') if e.headers else None)
                if total is not None and total == have and meta.get('url') == url:
                    _remove(meta_path)
                    return                            # the part file was already complete
                _remove(part, meta_path)
                error = _Retryable('requested range not satisfiable')
            elif e.code in (408, 425, 429) or e.code >= 500:
                error = e
            else:
                raise _SourceFailed(url, _reason(e)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.gaierror, FileNotFoundError)):
                raise _SourceFailed(url, _reason(e), network=isinstance(e.reason, socket.gaierror)) from None
            error = e
        except (_Retryable, http.client.HTTPException, OSError) as e:
            error = e
        now = os.path.getsize(part) if os.path.isfile(part) else 0
        failures = 0 if now > before else failures + 1
        if failures > retries:
            raise _SourceFailed(url, f'{_reason(error)}, {failures} {"try" if failures == 1 else "tries"}',
                                network=not isinstance(error, (urllib.error.HTTPError, _Retryable)))
        time.sleep(backoff * (2 ** max(failures - 1, 0)))


# ----------------------------------------------------------------------------- tar archives

def _unsafe_reason(member):
    """Why extracting ``member`` could write outside the destination, or None."""
    name = member.name
    parts = name.replace('\\', '/').split('/')
    if name.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', name):
        return 'absolute path'
    if '..' in parts:
        return "'..' in its path"
    if member.issym():
        target = member.linkname.replace('\\', '/')
        if target.startswith('/') or re.match(r'^[A-Za-z]:', target):
            return f'symlink to the absolute path {member.linkname}'
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == '..' or resolved.startswith('../') or resolved.startswith('/'):
            return f'symlink pointing outside the archive ({member.linkname})'
    elif member.islnk():
        target = member.linkname.replace('\\', '/')
        if target.startswith('/') or '..' in target.split('/'):
            return f'hard link pointing outside the archive ({member.linkname})'
    elif member.ischr() or member.isblk() or member.isfifo():
        return 'device or fifo'
    return None


def _norm_member(name):
    name = name.replace('\\', '/')
    while name.startswith('./'):
        name = name[2:]
    return name


def extract_member(archive, member_name, out_path, url=None):
    """Stream the regular file ``member_name`` of tar ``archive`` into ``out_path``.

    The whole archive is refused (``_SourceFailed``) if any member is unsafe; links are
    never followed and nothing but ``out_path`` is written.
    """
    where = url or archive
    try:
        with tarfile.open(archive, 'r:*') as tar:
            members = tar.getmembers()
            for m in members:
                why = _unsafe_reason(m)
                if why:
                    raise _SourceFailed(where, f'archive refused: unsafe member {m.name!r}, {why}')
            wanted = _norm_member(member_name)
            found = [m for m in members if _norm_member(m.name) == wanted]
            if not found:
                raise _SourceFailed(where, f'archive has no member {member_name}')
            member = found[-1]
            if not member.isfile():
                raise _SourceFailed(where, f'archive refused: member {member.name!r} is not a regular file')
            src = tar.extractfile(member)
            try:
                with src, open(out_path, 'wb') as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                    dst.flush()
                    os.fsync(dst.fileno())
            except OSError as e:
                _remove(out_path)
                raise _local_io('write', out_path, e) from None
    except (tarfile.TarError, EOFError, ValueError) as e:
        _remove(out_path)
        raise _SourceFailed(where, f'not a readable tar archive: {e}') from None


# ----------------------------------------------------------------------------- fetching

def _summary(failures):
    """Why the sources failed, in a few words: their hosts by reason, 'offline?' when the network
    failed for every one (e.g. 'offline? github.com, example.org: Name or service not known')."""
    hosts = {}
    for failure in failures:
        hosts.setdefault(failure.reason, {})[urllib.parse.urlsplit(failure.url).netloc or failure.url] = None
    text = '; '.join(f'{", ".join(where)}: {reason}' for reason, where in hosts.items())
    return f'offline? {text}' if failures and all(f.network for f in failures) else text


class _Fetcher:
    def __init__(self, dest, registry, mirror, timeout, retries, backoff, progress, log, verbose=False):
        self.dest = dest
        self.registry = registry
        self.mirror = mirror
        self.kw = dict(timeout=timeout, retries=retries, backoff=backoff, progress=progress)
        self.log = log
        self.verbose = verbose     # the URLs tried: each download, and every source of a failure
        self.lock = _Lock(dest)
        self.archives = {}     # local archive path -> (url, sha256) once verified this run
        self.bad_archives = {} # local archive path -> its _SourceFailed

    # -- one teacher -----------------------------------------------------------------
    def expected(self, name):
        """(the sha256 the file must have, or a prefix of it; where it is from): the registry's
        full digest, else the lock file's, else the registry's prefix; (None, None) if none."""
        registry = self.registry[name].get('sha256')
        if registry and len(registry) == 64:
            return registry, 'the registry'
        digest = self.lock.teacher(name)
        if digest:
            return digest, f'the lock file {self.lock.path}'
        return (registry, 'the registry (a prefix)') if registry else (None, None)

    def fetch(self, name):
        spec = self.registry[name]
        final = teacher_file(self.dest, name)
        if os.path.lexists(final):
            return self.check_existing(name, final)
        tried = []
        for source in spec['sources']:
            url = source_url(source, self.mirror)
            try:
                if source.get('member'):
                    self.from_archive(name, source, url, final)
                else:
                    self.from_file(name, url, final)
                return final
            except _SourceFailed as e:
                tried.append(e)
        if not self.verbose:
            instead = '' if self.mirror else ' or pass --mirror URL'
            raise UserError(f'{name}: not fetched ({_summary(tried)}); put the file at {final}{instead} '
                            f'(-v: the URLs tried)')
        where = []
        for source in spec['sources']:
            url = source_url(source, self.mirror)
            where.append(f'member {source["member"]} of {url}' if source.get('member') else url)
        raise UserError(f'{name}: not fetched: tried {"; ".join(map(str, tried))}. '
                        f'Download it by hand ({" or ".join(where)}) and put it at {final}, '
                        f'or pass --mirror URL (or set {MIRROR_ENV})')

    def check_existing(self, name, final):
        if not os.path.isfile(final):
            raise UserError(f'{final} exists but is not a regular file: remove it and run again')
        expected, where = self.expected(name)
        digest = sha256_of(final)
        if expected and not digest.startswith(expected):
            raise UserError(f'{final} exists but its sha256 {digest} does not match {expected} '
                            f'from {where}: delete it to download it again')
        if expected and len(expected) == 64:
            self.log(f'{name}: already present at {final}')
            return final
        # placed by hand (or the lock file was deleted; or only a prefix is known): check it,
        # then remember its hash
        self.verify_arch(name, final)
        self.lock.record('teachers', name, digest, os.path.getsize(final), 'local file')
        self.log(f'{name}: found {final}; recorded its sha256 in {self.lock.path}')
        return final

    def verify_arch(self, name, path):
        from helper.checkpoint import load_teacher
        import dataset
        spec = self.registry[name]
        num_classes = dataset.spec(teacher_dataset(spec)).num_classes
        load_teacher(spec['arch'], path, num_classes, role=None if spec['arch'] == name else f'teacher {name}')

    def install(self, name, tmp, final, url):
        """Hash-check and architecture-check ``tmp``, then rename it to ``final``."""
        digest = sha256_of(tmp)
        expected, where = self.expected(name)
        if expected and not digest.startswith(expected):
            _remove(tmp)
            raise _SourceFailed(url, f'sha256 {digest} does not match {expected} from {where}; if the '
                                     f'upstream file legitimately changed, remove its entry from the lock file')
        try:
            self.verify_arch(name, tmp)
        except UserError as e:
            _remove(tmp)
            raise _SourceFailed(url, f'downloaded file rejected: {e}') from None
        try:
            os.replace(tmp, final)
        except OSError as e:
            _remove(tmp)
            raise _local_io('install', final, e) from None
        fsync_dir(self.dest)
        self.lock.record('teachers', name, digest, os.path.getsize(final), url)
        self.log(f'{name}: installed {final} (sha256 {digest[:16]}...)')
        return digest

    def from_file(self, name, url, final):
        part = final + '.part'
        if self.verbose:
            self.log(f'{name}: downloading {url}')
        download(url, part, label=name, **self.kw)
        self.install(name, part, final, url)

    def from_archive(self, name, source, url, final):
        archive = os.path.join(self.dest, posixpath.basename(source['path']))
        if archive in self.bad_archives:
            raise self.bad_archives[archive]
        key = os.path.basename(archive)
        try:
            if archive not in self.archives:
                self.get_archive(key, archive, url)
            tmp = final + '.extract.part'
            extract_member(archive, source['member'], tmp, url)
        except _SourceFailed as e:
            if 'no member' not in str(e):
                self.bad_archives[archive] = e
                _remove(archive)
                self.archives.pop(archive, None)
            raise
        a_url, a_digest = self.archives[archive]
        try:
            self.install(name, tmp, final, f'{url}#{source["member"]}')
        except _SourceFailed as e:
            # a member that fails its hash or architecture check discredits the archive
            self.bad_archives[archive] = e
            _remove(archive)
            self.archives.pop(archive, None)
            raise
        self.lock.record('archives', key, a_digest, os.path.getsize(archive), a_url)

    def get_archive(self, key, archive, url):
        expected = self.lock.archive(key)
        if os.path.isfile(archive):                 # left by an earlier, interrupted run
            digest = sha256_of(archive)
            if expected is None or digest == expected:
                self.log(f'using the archive already downloaded at {archive}')
                self.archives[archive] = (url, digest)
                return
            _remove(archive)
        part = archive + '.part'
        if self.verbose:
            self.log(f'downloading {url}')
        download(url, part, label=key, **self.kw)
        digest = sha256_of(part)
        if expected and digest != expected:
            _remove(part)
            raise _SourceFailed(url, f'sha256 {digest} does not match {expected} from the lock file '
                                     f'{self.lock.path}')
        try:
            os.replace(part, archive)
        except OSError as e:
            raise _local_io('write', archive, e) from None
        self.archives[archive] = (url, digest)

    def cleanup_archives(self):
        """Delete an archive once every registry teacher it provides is installed."""
        for archive in list(self.archives):
            key = os.path.basename(archive)
            users = [n for n, spec in self.registry.items()
                     if any(s.get('member') and posixpath.basename(s['path']) == key
                            for s in spec['sources'])]
            if all(os.path.isfile(teacher_file(self.dest, n)) for n in users):
                _remove(archive)
            else:
                self.log(f'keeping {archive} for the teachers not fetched yet')


def fetch_teachers(names=None, dest=None, mirror=None, registry=None, *, timeout=30.0,
                   retries=3, backoff=1.0, progress=True, log=print, verbose=False):
    """Install the teachers ``names`` (all when None) at ``<dest>/<NAME>_vanilla.pth``; ``dest``
    None: each in ``save/teacher_model/<its data set>``.

    ``mirror`` (default: ``$ASKD_TEACHER_MIRROR``) replaces every source's base URL.
    Returns ``{name: path}``.  Every failure is a one-line UserError, one short line per teacher
    (``verbose``: with every URL tried, and each download's URL logged); a folder made for the
    teachers and left empty is removed.
    """
    registry = load_registry() if registry is None else registry
    names = list(registry) if not names else list(dict.fromkeys(names))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UserError(f'unknown teacher(s) {", ".join(unknown)}: choose from {", ".join(registry)}')
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    mirror = _normalize_mirror(mirror)
    fetchers = {}   # destination folder -> its fetcher (its own lock file)
    done, failed = {}, []
    with contextlib.ExitStack() as made:
        try:
            for name in names:
                folder = dest or default_dest(teacher_dataset(registry[name]))
                if folder not in fetchers:
                    made.enter_context(no_empty_folders_left(folder))
                    try:
                        os.makedirs(folder, exist_ok=True)
                    except OSError as e:
                        raise UserError(f'cannot create the teacher folder {folder}: {e.strerror or e}') from None
                    fetchers[folder] = _Fetcher(folder, registry, mirror, timeout, retries, backoff, progress, log,
                                                verbose)
                try:
                    done[name] = fetchers[folder].fetch(name)
                except UserError as e:
                    failed.append((name, str(e)))
        finally:
            for fetcher in fetchers.values():
                fetcher.cleanup_archives()
    if len(failed) == 1:
        raise UserError(failed[0][1])
    if failed:
        for _, msg in failed:
            print(f'error: {msg}', file=sys.stderr, flush=True)
        raise UserError(f'{len(failed)} of {len(names)} teachers could not be fetched '
                        f'({", ".join(n for n, _ in failed)}); see the messages above')
    return done
