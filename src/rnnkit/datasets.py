"""Datasets: where data files are found, downloaded and cached, and the IMDB reviews loader.

Contract:

* Data directory: ``resolve_data_dir(d)`` = ``d`` if given, else ``$RNNKIT_DATA_DIR``, else
  ``<project root>/../shared/data`` when it exists, else None.
* Cache (downloads): ``cache_dir`` if given, else ``$RNNKIT_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/rnnkit`` or ``~/.cache/rnnkit``. A download goes to ``<file>.part``, is
  checked against the published checksum, then renamed into place (atomic). A file found in
  the data directory is used as is (no checksum: the shared copy is a slightly edited subset).
  Nothing touches the network when the file is present.
* ``load_imdb(format="raw")`` streams ``aclImdb_v1.tar.gz`` (Maas et al., 2011) without
  extracting it: ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``, label 1 = pos, 0 = neg,
  ordered by (label neg before pos, numeric id); ``unsup`` and other members are ignored.
  An already extracted ``aclImdb/`` directory in the data directory also works.
* ``load_imdb(format="keras")`` reads the Keras ``imdb.npz`` layout (``x_train, y_train,
  x_test, y_test``) and returns ids in the ``imdb.load_data`` convention: 1 start, 2 out of
  vocabulary, word of frequency rank r -> id r + 3, ids >= ``num_words`` -> 2. The official
  file (raw ranks) is shuffled with Keras's seed 113 and shifted exactly as
  ``keras.datasets.imdb.load_data`` does; a file that is already in that convention (every
  review starts with 1, e.g. ``imdb_keras_subset.npz``) is only capped to ``num_words``.
  Its ragged object arrays are read with an unpickler that only admits numpy's array
  reconstruction (never ``allow_pickle=True``).
* ``train_val_split(*arrays, validation_split=0.2, seed=42)``: one seeded permutation
  (``numpy.random.default_rng(seed)``); the first ``round(n * validation_split)`` shuffled
  items are validation, the rest (shuffled) training.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

__all__ = [
    "IMDB_RAW_URL", "IMDB_RAW_MD5", "IMDB_KERAS_URL", "IMDB_KERAS_SHA256",
    "resolve_data_dir", "default_cache_dir", "download_file", "load_imdb", "load_imdb_encoded",
    "read_imdb_tarball", "load_keras_npz", "train_val_split",
]

IMDB_RAW_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_RAW_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_RAW_FILES = ("aclImdb_v1.tar.gz",)
IMDB_KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
IMDB_KERAS_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
IMDB_KERAS_FILES = ("imdb.npz", "imdb_keras_subset.npz")

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- locations

def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The explicit ``data_dir``, else ``$RNNKIT_DATA_DIR``, else ``../shared/data`` next to
    the project root when that exists, else None."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("RNNKIT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = _PROJECT_ROOT.parent / "shared" / "data"
    if (_PROJECT_ROOT / "pyproject.toml").is_file() and shared.is_dir():
        return shared
    return None


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$RNNKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnkit`` or
    ``~/.cache/rnnkit``."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get("RNNKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rnnkit"


def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None,
                  sha256: str | None = None, progress: bool = True, timeout: float = 60.0
                  ) -> Path:
    """Download ``url`` to ``dest`` atomically (``dest.part`` -> verify -> rename).

    The checksum (``md5`` or ``sha256`` hex digest) is checked before the rename; on a
    mismatch or network error the partial file is removed and UserError is raised.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    hashers = {k: hashlib.new(k) for k, v in (("md5", md5), ("sha256", sha256)) if v}
    bar = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                           desc=f"downloading {dest.name}", file=sys.stderr, leave=False)
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise UserError(f"could not download {url}: {reason}") from None
    finally:
        if bar is not None:
            bar.close()
    for name, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = hashers[name].hexdigest()
            if got.lower() != want.lower():
                part.unlink(missing_ok=True)
                raise UserError(f"checksum mismatch for {url}: {name} {got}, expected {want}")
    os.replace(part, dest)
    return dest


def _find_or_download(names: Sequence[str], data_dir: str | os.PathLike | None, download: bool,
                      cache_dir: str | os.PathLike | None, url: str, what: str,
                      md5: str | None = None, sha256: str | None = None) -> Path:
    looked: list[Path] = []
    d = resolve_data_dir(data_dir)
    if d is not None:
        for n in names:
            p = d / n
            if p.is_file():
                return p
            looked.append(p)
    cache = default_cache_dir(cache_dir)
    cached = cache / names[0]
    if cached.is_file():
        return cached
    looked.append(cached)
    if not download:
        raise UserError(f"{what} not found (looked for {', '.join(map(str, looked))}); pass "
                        "--data-dir / set RNNKIT_DATA_DIR, or allow the download")
    print(f"rnnkit: {what} not found locally; downloading {url} to {cached}", file=sys.stderr)
    return download_file(url, cached, md5=md5, sha256=sha256)


# --------------------------------------------------------------------------- IMDB raw text

_MEMBER_RE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")

Split = tuple[list[str], np.ndarray]


class _TarFormatError(ValueError):
    """A tar layout the fast reader does not handle (the caller falls back to tarfile)."""


class _ChunkReader:
    """``read(n)`` over an iterator of byte chunks (returns fewer bytes only at the end)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0

    def read(self, n: int) -> bytes:
        if len(self._buf) - self._pos < n:
            parts = [self._buf[self._pos:]]
            have = len(parts[0])
            for chunk in self._it:
                parts.append(chunk)
                have += len(chunk)
                if have >= n:
                    break
            self._buf, self._pos = b"".join(parts), 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out


def _tar_members(source: bytes | Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of an uncompressed tar stream (bytes or chunks).

    A small reader of the POSIX ustar/GNU/pax layouts (512-byte headers, long names from GNU
    ``L`` or pax ``path`` records), checking every header checksum; _TarFormatError on
    anything it does not understand, so the caller can fall back to :mod:`tarfile`. It exists
    because :mod:`tarfile` spends ~4 s on the 50,000 small IMDB members, this ~0.2 s.
    """
    read = _ChunkReader([source] if isinstance(source, bytes) else source).read
    long_name: str | None = None
    offset = 0
    while True:
        h = read(512)
        if len(h) < 512:
            raise _TarFormatError("tar archive ends without its end-of-archive block")
        if h == _ZERO_BLOCK:
            return
        chk = h[148:156].rstrip(b"\0 ")
        try:
            ok = bool(chk) and int(chk, 8) == sum(h) - sum(h[148:156]) + 256
        except ValueError:
            ok = False
        if not ok:
            raise _TarFormatError(f"bad tar header checksum at offset {offset}")
        size_field = h[124:136]
        if size_field[0] & 0x80:
            raise _TarFormatError("base-256 sizes are not supported")
        size = int(size_field.rstrip(b"\0 ") or b"0", 8)
        padded = (size + 511) // 512 * 512
        block = read(padded)
        if len(block) < padded:
            raise _TarFormatError("truncated tar archive")
        offset += 512 + padded
        data = block[:size]
        typ = h[156:157]
        if typ == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if typ == b"x":
            long_name = _pax_path(data) or long_name
            continue
        if typ in (b"g", b"K"):
            continue
        name = h[:100].split(b"\0", 1)[0].decode("utf-8")
        if h[257:262] == b"ustar":
            prefix = h[345:500].split(b"\0", 1)[0].decode("utf-8")
            if prefix:
                name = f"{prefix}/{name}"
        if long_name is not None:
            name, long_name = long_name, None
        if typ in (b"0", b"\0", b"7"):
            yield name, data


_ZERO_BLOCK = bytes(512)


def _pax_path(data: bytes) -> str | None:
    path, i = None, 0
    try:
        while i < len(data):
            sp = data.index(b" ", i)
            length = int(data[i:sp])
            key, _, value = data[sp + 1:i + length - 1].partition(b"=")
            if key == b"path":
                path = value.decode("utf-8")
            i += length
    except ValueError as e:
        raise _TarFormatError(f"bad pax header: {e}") from None
    return path


def _gunzip_chunks(path: Path, chunk: int = 1 << 22) -> Iterator[bytes]:
    """Decompressed chunks of a (possibly multi-member) gzip file; memory stays ~ chunk."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        magic = f.read(2)
        if magic != b"\x1f\x8b":
            raise ValueError("not a gzip file")
        raw = magic
        while raw:
            out = d.decompress(raw)
            if out:
                yield out
            while d.eof and d.unused_data:  # another gzip member follows
                rest = d.unused_data
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = d.decompress(rest)
                if out:
                    yield out
            raw = f.read(chunk)
    tail = d.flush()
    if tail:
        yield tail
    if not d.eof:
        raise ValueError("truncated gzip file")


def _tarfile_members(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r|gz") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isfile() else None
            if f is not None:
                yield m.name, f.read()


def read_imdb_tarball(path: str | os.PathLike, with_ratings: bool = False
                      ) -> dict[str, dict[str, Any]]:
    """Read ``aclImdb_v1.tar.gz`` without extracting it: ``{"train"|"test": {"texts",
    "labels"[, "ids", "ratings"]}}`` sorted by (label, id); labels 1 = pos, 0 = neg; texts
    decoded as UTF-8 (undecodable bytes replaced)."""
    path = Path(path)

    def collect(members: Iterator[tuple[str, bytes]]
                ) -> dict[str, list[tuple[bool, int, int, str]]]:
        rows: dict[str, list[tuple[bool, int, int, str]]] = {"train": [], "test": []}
        for name, data in members:
            mt = _MEMBER_RE.search(name)
            if mt is None:
                continue
            split, pol, rid, rating = mt.groups()
            rows[split].append((pol == "pos", int(rid), int(rating),
                                data.decode("utf-8", errors="replace")))
        return rows

    try:
        try:
            rows = collect(_tar_members(_gunzip_chunks(path)))
        except _TarFormatError:  # an unusual tar layout: let tarfile read it
            rows = collect(_tarfile_members(path))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise UserError(f"{path}: cannot read the IMDB archive ({type(e).__name__}: {e})"
                        ) from None
    out: dict[str, dict[str, Any]] = {}
    for split, r in rows.items():
        if not r:
            raise UserError(f"{path}: no aclImdb/{split}/{{pos,neg}}/*.txt reviews in the archive")
        r.sort(key=lambda t: (t[0], t[1]))
        out[split] = {"texts": [t[3] for t in r],
                      "labels": np.fromiter((t[0] for t in r), dtype=np.int64, count=len(r))}
        if with_ratings:
            out[split]["ids"] = np.array([t[1] for t in r], dtype=np.int64)
            out[split]["ratings"] = np.array([t[2] for t in r], dtype=np.int64)
    return out


def _read_imdb_dir(root: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for split in ("train", "test"):
        rows = []
        for pol in ("neg", "pos"):
            for p in (root / split / pol).glob("*_*.txt"):
                mt = _MEMBER_RE.search(p.as_posix())
                if mt is None:
                    continue
                rows.append((pol == "pos", int(mt.group(3)),
                             p.read_bytes().decode("utf-8", errors="replace")))
        if not rows:
            raise UserError(f"{root}: no {split}/{{pos,neg}}/*.txt reviews")
        rows.sort(key=lambda t: (t[0], t[1]))
        out[split] = {"texts": [t[2] for t in rows],
                      "labels": np.array([t[0] for t in rows], dtype=np.int64)}
    return out


# --------------------------------------------------------------------------- Keras npz

# the only globals an object-array .npy pickle needs (numpy 1.x and 2.x spellings)
_NPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_npy(buf: io.BytesIO) -> np.ndarray:
    version = np.lib.format.read_magic(buf)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    if not dtype.hasobject:
        buf.seek(0)
        return np.lib.format.read_array(buf, allow_pickle=False)
    arr = _ArrayOnlyUnpickler(buf).load()
    if not isinstance(arr, np.ndarray):
        raise ValueError("object member is not an array")
    return arr


def load_keras_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file, reading object (ragged) arrays with an unpickler that only
    rebuilds numpy arrays; UserError when the file is missing or not such an archive."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if member.endswith(".npy"):
                    arrays[member[:-4]] = _read_npy(io.BytesIO(z.read(member)))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (zipfile.BadZipFile, ValueError, pickle.UnpicklingError, EOFError, OSError) as e:
        raise UserError(f"{path}: not a valid .npz dataset ({e})") from None
    return arrays


def _keras_convention(arrays: dict[str, np.ndarray], path: Path, num_words: int | None,
                      seed: int) -> tuple[Split, Split]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise UserError(f"{path}: not an imdb.npz file (missing {', '.join(missing)})")
    xs = {k: [list(map(int, s)) for s in arrays[k]] for k in ("x_train", "x_test")}
    ys = {k: np.asarray(arrays[k]).astype(np.int64) for k in ("y_train", "y_test")}
    converted = all(s and s[0] == 1 for x in xs.values() for s in x)
    if not converted:  # official file: raw frequency ranks, shuffled like keras load_data
        rng = np.random.RandomState(seed)
        for xk, yk in (("x_train", "y_train"), ("x_test", "y_test")):
            idx = np.arange(len(xs[xk]))
            rng.shuffle(idx)
            xs[xk] = [[1] + [w + 3 for w in xs[xk][i]] for i in idx]
            ys[yk] = ys[yk][idx]
    if num_words is not None:
        nw = int(num_words)
        xs = {k: [[w if w < nw else 2 for w in s] for s in x] for k, x in xs.items()}
    return (xs["x_train"], ys["y_train"]), (xs["x_test"], ys["y_test"])


# --------------------------------------------------------------------------- loaders

def load_imdb(data_dir: str | os.PathLike | None = None, format: str = "raw",
              download: bool = True, cache_dir: str | os.PathLike | None = None,
              num_words: int | None = None, seed: int = 113) -> tuple[Split, Split]:
    """IMDB movie reviews as ``(train_x, train_y), (test_x, test_y)``.

    ``format="raw"``: x are review strings (from ``aclImdb_v1.tar.gz``).
    ``format="keras"``: x are id lists in the ``imdb.load_data`` convention (from ``imdb.npz``
    or ``imdb_keras_subset.npz``), capped to ``num_words`` when given; ``seed`` is the shuffle
    Keras applies to the official file (113).
    y are int64 arrays, 1 = positive, 0 = negative.
    """
    if format == "raw":
        d = resolve_data_dir(data_dir)
        if d is not None and (d / "aclImdb" / "train").is_dir() and not any(
                (d / n).is_file() for n in IMDB_RAW_FILES):
            data = _read_imdb_dir(d / "aclImdb")
        else:
            path = _find_or_download(IMDB_RAW_FILES, data_dir, download, cache_dir,
                                     IMDB_RAW_URL, "IMDB archive aclImdb_v1.tar.gz",
                                     md5=IMDB_RAW_MD5)
            data = read_imdb_tarball(path)
        return ((data["train"]["texts"], data["train"]["labels"]),
                (data["test"]["texts"], data["test"]["labels"]))
    if format == "keras":
        path = _find_or_download(IMDB_KERAS_FILES, data_dir, download, cache_dir,
                                 IMDB_KERAS_URL, "IMDB id file imdb.npz",
                                 sha256=IMDB_KERAS_SHA256)
        return _keras_convention(load_keras_npz(path), path, num_words, seed)
    raise ValueError(f"format must be 'raw' or 'keras', got {format!r}")


def load_imdb_encoded(encoder: Any = None, *, num_words: int = 500, maxlen: int | None = 100,
                      tokenizer: str = "basic", data_dir: str | os.PathLike | None = None,
                      download: bool = True, cache_dir: str | os.PathLike | None = None):
    """Raw IMDB -> ``encoder, (x_train, y_train), (x_test, y_test)`` as torch tensors.

    Without ``encoder`` a :class:`rnnkit.text.TextEncoder` is fitted on the training texts
    only (``num_words``, ``maxlen``, ``tokenizer``); y are float32 ``(n,)`` tensors of 0/1.
    """
    from .text import TextEncoder

    (tr_x, tr_y), (te_x, te_y) = load_imdb(data_dir, "raw", download, cache_dir)
    if encoder is None:
        encoder = TextEncoder(tokenizer, maxlen=maxlen).fit(tr_x, num_words)
    return (encoder,
            (encoder.encode(tr_x), torch.as_tensor(tr_y, dtype=torch.float32)),
            (encoder.encode(te_x), torch.as_tensor(te_y, dtype=torch.float32)))


# --------------------------------------------------------------------------- splitting

def _take(a: Any, idx: np.ndarray) -> Any:
    if isinstance(a, torch.Tensor):
        return a[torch.as_tensor(idx, dtype=torch.long, device=a.device)]
    if isinstance(a, np.ndarray):
        return a[idx]
    if isinstance(a, tuple):
        return tuple(a[i] for i in idx)
    return [a[i] for i in idx]


def train_val_split(*arrays: Any, validation_split: float = 0.2, seed: int = 42
                    ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Split aligned arrays/tensors/lists with one seeded shuffle.

    Returns ``(train_parts, val_parts)``, each a tuple with one entry per input, of the same
    type (numpy array, torch tensor, list, tuple)::

        (x_tr, y_tr), (x_val, y_val) = train_val_split(x, y)   # 20 % validation, seed 42
    """
    if not arrays:
        raise ValueError("train_val_split needs at least one array")
    if not 0.0 < float(validation_split) < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
    n = len(arrays[0])
    for i, a in enumerate(arrays):
        if len(a) != n:
            raise ValueError(f"arrays have different lengths: {n} (first) and {len(a)} "
                             f"(argument {i + 1})")
    n_val = int(round(n * float(validation_split)))
    if n_val == 0 or n_val == n:
        raise ValueError(f"validation_split={validation_split} of {n} items leaves an empty "
                         "training or validation set")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    return tuple(_take(a, tr_idx) for a in arrays), tuple(_take(a, val_idx) for a in arrays)
