"""rnnkit.datasets: data dir resolution, IMDB tarball/npz loading, download cache, split."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
from conftest import require_file

from rnnkit import datasets as D
from rnnkit.errors import UserError

# --------------------------------------------------------------------------- helpers

REVIEWS = {  # path -> text
    "aclImdb/train/pos/10_9.txt": "Great film.<br /><br />Loved it!",
    "aclImdb/train/pos/2_8.txt": "Good acting, good story. Caf\u00e9 scene!",
    "aclImdb/train/neg/1_1.txt": "Terrible. I don't recommend it.",
    "aclImdb/train/neg/3_2.txt": "Bad bad bad.",
    "aclImdb/test/pos/0_10.txt": "A masterpiece.",
    "aclImdb/test/neg/5_3.txt": "Boring and long.",
    "aclImdb/train/unsup/0_0.txt": "unlabelled review",
    "aclImdb/train/labeledBow.feat": "0:1 1:2",
    "aclImdb/README": "readme",
}


def make_tarball(path: Path, members: dict[str, str] = REVIEWS,
                 fmt: int = tarfile.GNU_FORMAT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=fmt) as tf:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RNNKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- locations


def test_resolve_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert D.resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(tmp_path / "env"))
    assert D.resolve_data_dir() == tmp_path / "env"
    assert D.resolve_data_dir(tmp_path / "x") == tmp_path / "x"  # explicit wins
    monkeypatch.delenv("RNNKIT_DATA_DIR")
    shared = D._PROJECT_ROOT.parent / "shared" / "data"
    assert D.resolve_data_dir() == (shared if shared.is_dir() else None)
    monkeypatch.setattr(D, "_PROJECT_ROOT", tmp_path / "proj")
    assert D.resolve_data_dir() is None


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert D.default_cache_dir(tmp_path) == tmp_path
    assert D.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("RNNKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.default_cache_dir() == tmp_path / "xdg" / "rnnkit"


# --------------------------------------------------------------------------- raw tarball


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_reader_agrees_with_tarfile(tmp_path: Path, fmt: int) -> None:
    members = dict(REVIEWS)
    # > 100 bytes: a GNU 'L' record, a pax path or a ustar prefix
    members["aclImdb/" + "d" * 120 + "/1_1.txt"] = "long name"
    members["aclImdb/test/neg/7_2.txt"] = "\u00fcml\u00e4ut \u2019quoted\u2019 " * 40
    p = make_tarball(tmp_path / "a.tar.gz", members, fmt)
    import gzip

    raw = gzip.decompress(p.read_bytes())
    with tarfile.open(p) as tf:
        want = [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]
    assert list(D._tar_members(raw)) == want
    # streamed in odd-sized chunks, and through the gzip streamer with tiny reads
    assert list(D._tar_members(raw[i:i + 777] for i in range(0, len(raw), 777))) == want
    assert list(D._tar_members(D._gunzip_chunks(p, chunk=100))) == want
    assert list(D._tarfile_members(p)) == want


def test_tar_reader_rejects_corruption_and_falls_back(tmp_path: Path) -> None:
    import gzip

    buf = bytearray(gzip.decompress(make_tarball(tmp_path / "a.tar.gz").read_bytes()))
    with pytest.raises(D._TarFormatError, match="checksum"):
        list(D._tar_members(bytes(buf[:100]) + b"X" + bytes(buf[101:])))
    with pytest.raises(D._TarFormatError):
        list(D._tar_members(bytes(buf[:700])))
    # a layout the fast reader refuses is read by tarfile instead, with the same result
    good = D.read_imdb_tarball(tmp_path / "a.tar.gz")

    def refuse(source):
        raise D._TarFormatError("pretend")
        yield

    import unittest.mock

    with unittest.mock.patch.object(D, "_tar_members", refuse):
        again = D.read_imdb_tarball(tmp_path / "a.tar.gz")
    assert again["train"]["texts"] == good["train"]["texts"]
    assert again["test"]["labels"].tolist() == good["test"]["labels"].tolist()
    # a truncated download
    whole = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="cannot read"):
        D.read_imdb_tarball(tmp_path / "cut.tar.gz")
    with pytest.raises(UserError, match="cannot read"):
        (tmp_path / "junk.tar.gz").write_bytes(gzip.compress(b"X" * 5000))
        D.read_imdb_tarball(tmp_path / "junk.tar.gz")
    (tmp_path / "notgz.tar.gz").write_bytes(b"plain text")
    with pytest.raises(UserError, match="cannot read"):
        D.read_imdb_tarball(tmp_path / "notgz.tar.gz")


def test_read_imdb_tarball_labels_order_and_ignored_members(tmp_path: Path) -> None:
    d = D.read_imdb_tarball(make_tarball(tmp_path / "aclImdb_v1.tar.gz"), with_ratings=True)
    tr, te = d["train"], d["test"]
    assert tr["texts"] == ["Terrible. I don't recommend it.", "Bad bad bad.",
                           "Good acting, good story. Caf\u00e9 scene!",
                           "Great film.<br /><br />Loved it!"]
    assert tr["labels"].tolist() == [0, 0, 1, 1] and tr["labels"].dtype == np.int64
    assert tr["ids"].tolist() == [1, 3, 2, 10] and tr["ratings"].tolist() == [1, 2, 8, 9]
    assert te["texts"] == ["Boring and long.", "A masterpiece."] and te["labels"].tolist() == [0, 1]


def test_load_imdb_raw_local_file_needs_no_network(tmp_path: Path, no_network) -> None:
    make_tarball(tmp_path / "aclImdb_v1.tar.gz")
    (x, y), (xt, yt) = D.load_imdb(tmp_path)
    assert len(x) == 4 and len(xt) == 2 and y.tolist() == [0, 0, 1, 1]


def test_load_imdb_raw_extracted_directory(tmp_path: Path, no_network) -> None:
    for name, text in REVIEWS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    from_dir = D.load_imdb(tmp_path)
    make_tarball(tmp_path / "t" / "aclImdb_v1.tar.gz")
    from_tar = D.load_imdb(tmp_path / "t")
    for (a, b), (c, e) in zip(from_dir, from_tar, strict=True):
        assert a == c and b.tolist() == e.tolist()


def test_load_imdb_missing_without_download_names_the_places(tmp_path: Path) -> None:
    with pytest.raises(UserError) as ei:
        D.load_imdb(tmp_path / "nowhere", download=False)
    msg = str(ei.value)
    assert "aclImdb_v1.tar.gz" in msg and str(tmp_path / "nowhere") in msg
    assert str(tmp_path / "cache") in msg and "\n" not in msg
    with pytest.raises(UserError, match="imdb.npz"):
        D.load_imdb(tmp_path / "nowhere", format="keras", download=False)
    with pytest.raises(ValueError, match="format"):
        D.load_imdb(tmp_path, format="csv")


def test_download_verifies_checksum_and_caches(tmp_path: Path, monkeypatch) -> None:
    src = make_tarball(tmp_path / "src" / "official.tar.gz")
    monkeypatch.setattr(D, "IMDB_RAW_URL", src.as_uri())
    monkeypatch.setattr(D, "IMDB_RAW_MD5", md5(src))
    (x, y), _ = D.load_imdb(tmp_path / "empty")
    cached = tmp_path / "cache" / "aclImdb_v1.tar.gz"
    assert cached.read_bytes() == src.read_bytes() and len(x) == 4
    assert sorted(p.name for p in cached.parent.iterdir()) == ["aclImdb_v1.tar.gz"]  # no .part
    # second time: from the cache, no network
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: 1 / 0)
    assert D.load_imdb(tmp_path / "empty", download=False)[0][0] == x


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    src = make_tarball(tmp_path / "official.tar.gz")
    monkeypatch.setattr(D, "IMDB_RAW_URL", src.as_uri())
    monkeypatch.setattr(D, "IMDB_RAW_MD5", "0" * 32)
    with pytest.raises(UserError, match="checksum mismatch"):
        D.load_imdb(tmp_path / "empty")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_download_network_error_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(D, "IMDB_RAW_URL", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(UserError, match="could not download"):
        D.load_imdb(tmp_path / "empty")
    assert not any((tmp_path / "cache").glob("*.part"))


# --------------------------------------------------------------------------- keras npz


def _ragged(seqs: list[list[int]]) -> np.ndarray:
    a = np.empty(len(seqs), dtype=object)
    a[:] = seqs
    return a


def _official_like_npz(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    def seqs(n):
        return [list(map(int, rng.integers(1, 80, size=rng.integers(1, 25)))) for _ in range(n)]
    np.savez(path, x_train=_ragged(seqs(30)), y_train=rng.integers(0, 2, 30),
             x_test=_ragged(seqs(12)), y_test=rng.integers(0, 2, 12))
    return path


@pytest.mark.parametrize("num_words", [20, 50, 90])
def test_keras_format_matches_keras_load_data(tmp_path: Path, monkeypatch, num_words) -> None:
    """The official imdb.npz layout (raw ranks) gives exactly keras.datasets.imdb.load_data."""
    from keras.src.datasets import imdb as kimdb

    path = _official_like_npz(tmp_path / "imdb.npz")
    monkeypatch.setattr(kimdb, "get_file", lambda *a, **k: str(path))
    (kx, ky), (kxt, kyt) = kimdb.load_data(num_words=num_words)
    (x, y), (xt, yt) = D.load_imdb(tmp_path, format="keras", num_words=num_words,
                                   download=False)
    assert x == [list(s) for s in kx] and xt == [list(s) for s in kxt]
    assert y.tolist() == ky.tolist() and yt.tolist() == kyt.tolist()


def test_keras_format_already_converted_file_is_only_capped(tmp_path: Path) -> None:
    x = [[1, 5, 499, 2], [1, 3, 10]]
    np.savez(tmp_path / "imdb_keras_subset.npz", x_train=_ragged(x), y_train=np.array([1, 0]),
             x_test=_ragged([[1, 7]]), y_test=np.array([1]))
    (a, b), (c, d) = D.load_imdb(tmp_path, format="keras", download=False)
    assert a == x and c == [[1, 7]] and b.tolist() == [1, 0]
    (a, _), _ = D.load_imdb(tmp_path, format="keras", num_words=8, download=False)
    assert a == [[1, 5, 2, 2], [1, 3, 2]]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_npz_loader_refuses_code_in_pickles(tmp_path: Path) -> None:
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil()
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "imdb.npz", "w") as z:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{k}.npy", buf.getvalue())
    with pytest.raises(UserError, match="refusing to load posix.system|refusing to load os"):
        D.load_keras_npz(tmp_path / "imdb.npz")
    assert pickle.dumps(0)  # pickle itself untouched
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a valid"):
        D.load_keras_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros(3))
    with pytest.raises(UserError, match="missing"):
        D._keras_convention(D.load_keras_npz(tmp_path / "partial.npz"), tmp_path, None, 113)


def test_download_keras_file_with_sha256(tmp_path: Path, monkeypatch) -> None:
    src = _official_like_npz(tmp_path / "src.npz")
    monkeypatch.setattr(D, "IMDB_KERAS_URL", src.as_uri())
    monkeypatch.setattr(D, "IMDB_KERAS_SHA256", hashlib.sha256(src.read_bytes()).hexdigest())
    (x, _), _ = D.load_imdb(tmp_path / "empty", format="keras", num_words=50)
    assert len(x) == 30 and (tmp_path / "cache" / "imdb.npz").is_file()


# --------------------------------------------------------------------------- split


def test_train_val_split_is_a_seeded_partition() -> None:
    x = np.arange(100) * 10
    y = torch.arange(100)
    texts = [f"t{i}" for i in range(100)]
    (xt, yt, tt), (xv, yv, tv) = D.train_val_split(x, y, texts)
    assert len(xv) == 20 and len(xt) == 80
    assert isinstance(xt, np.ndarray) and isinstance(yt, torch.Tensor) and isinstance(tt, list)
    assert sorted(np.concatenate([xt, xv]).tolist()) == x.tolist()
    assert (xt == yt.numpy() * 10).all() and tv == [f"t{i}" for i in yv.tolist()]
    (xt2, *_), (xv2, *_) = D.train_val_split(x, y, texts)
    assert xv2.tolist() == xv.tolist() and xt2.tolist() == xt.tolist()
    (_,), (xv3,) = D.train_val_split(x, seed=7)
    assert xv3.tolist() != xv.tolist()
    assert xt.tolist() != sorted(xt.tolist())  # training part is shuffled too
    (_,), (v,) = D.train_val_split(list(range(10)), validation_split=0.25)
    assert len(v) == 2  # round(2.5) -> 2 (banker's rounding)


def test_train_val_split_errors() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        D.train_val_split([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="validation_split"):
        D.train_val_split([1, 2, 3], validation_split=1.0)
    with pytest.raises(ValueError, match="empty"):
        D.train_val_split([1, 2], validation_split=0.1)
    with pytest.raises(ValueError, match="at least one"):
        D.train_val_split()


def test_load_imdb_encoded(tmp_path: Path, no_network) -> None:
    make_tarball(tmp_path / "aclImdb_v1.tar.gz")
    enc, (x, y), (xt, yt) = D.load_imdb_encoded(num_words=10, maxlen=6, data_dir=tmp_path)
    assert x.shape == (4, 6) and xt.shape == (2, 6) and x.dtype == torch.int64
    assert y.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1]
    assert enc.vocab.words[:2] == ["bad", "good"]  # fitted on the training texts only
    assert "masterpiece" not in enc.vocab


# --------------------------------------------------------------------------- real data


def test_real_imdb_counts_balance_and_known_review(imdb_raw) -> None:
    (x, y), (xt, yt) = imdb_raw
    assert len(x) == len(y) == 25000 and len(xt) == len(yt) == 25000
    assert int(y.sum()) == 12500 and int(yt.sum()) == 12500
    assert y[:12500].max() == 0 and y[12500:].min() == 1  # sorted: neg then pos
    # aclImdb/train/neg/0_3.txt, the first review in the official archive's train/neg
    assert x[0].startswith("Story of a man who has unnatural feelings for a pig. Starts out "
                           "with a opening scene that is a terrific example of absurd comedy.")
    assert all(isinstance(t, str) and t for t in x[::500])
    assert sum("<br />" in t for t in x) > 10000


def test_real_keras_subset(data_dir: Path) -> None:
    require_file(data_dir, "imdb_keras_subset.npz")
    (x, y), (xt, yt) = D.load_imdb(data_dir, format="keras", download=False)
    assert (len(x), len(y), len(xt), len(yt)) == (5000, 5000, 1000, 1000)
    assert all(s[0] == 1 for s in x) and max(max(s) for s in x) == 499
    assert set(np.unique(y)) == {0, 1} and 0.45 < y.mean() < 0.55
    # same result as numpy's (unsafe) pickle loader on this trusted file
    with np.load(data_dir / "imdb_keras_subset.npz", allow_pickle=True) as ref:
        assert x[:50] == [list(s) for s in ref["x_train"][:50]]
        assert yt.tolist() == ref["y_test"].tolist()
