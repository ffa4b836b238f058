"""rnnkit.text: tokenizers, Vocabulary, pad_sequences (against Keras), length stats, TextEncoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit import text as T
from rnnkit.errors import UserError
from rnnkit.layers import one_hot
from rnnkit.text import (
    BasicTokenizer,
    TextEncoder,
    Tokenizer,
    Vocabulary,
    get_tokenizer,
    length_stats,
    pad_sequences,
    register_tokenizer,
    suggest_maxlen,
    tokenizer_from_config,
)

# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text, tokens", [
    ("I DON'T like it.<br /><br />Great film!!!", ["i", "dont", "like", "it", "great", "film"]),
    ("a<br>b<BR/>c<br  />d", ["a", "b", "c", "d"]),
    ("10/10, would watch again; (really)", ["10", "10", "would", "watch", "again", "really"]),
    ("it’s Spielberg’s best", ["its", "spielbergs", "best"]),
    ("snake_case and e-mail", ["snake", "case", "and", "e", "mail"]),
    ("Café NAÏVE Ørsted", ["café", "naïve", "ørsted"]),
    ("한국어 문장입니다. 좋아요!", ["한국어", "문장입니다", "좋아요"]),
    ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),
    ("", []),
    ("  ...!!! <br />  ", []),
])
def test_basic_tokenizer_examples(text: str, tokens: list[str]) -> None:
    assert BasicTokenizer().tokenize(text) == tokens


def test_basic_tokenizer_lowercase_option_and_type_error() -> None:
    assert BasicTokenizer(lowercase=False).tokenize("Hello World") == ["Hello", "World"]
    with pytest.raises(TypeError):
        BasicTokenizer().tokenize(b"bytes")  # type: ignore[arg-type]


def _regex_reference(text: str) -> list[str]:
    """The tokenizer's definition written directly as one regex pass (slow but obvious)."""
    text = T._BR_RE.sub(" ", text.lower())
    return T._WORD_RE.findall(text.translate(T._APOSTROPHES))


_ALPHABET = st.sampled_from(list("abcXYZ019 _'`.,;!?-/<>\"\t\n") + [
    "<br />", "<br>", "é", "É", "ß", "İ", "\u0301", "\u0915", "\u093f", "\u094d", "한", "’", "´",
    "\u00a0", "\u2028", "—", "“", "”", "…", "½", "²", "ʼ", "_x", "\u0e01", "\u0e34", "😀"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_fast_tokenizer_matches_regex_definition(text: str) -> None:
    assert BasicTokenizer().tokenize(text) == _regex_reference(text)


# --------------------------------------------------------------------------- registry


@register_tokenizer("test-chars")
class _CharTokenizer(Tokenizer):
    """A trainable toy tokenizer with a side file: keeps only characters seen in fit()."""

    needs_fit = True

    def __init__(self, alphabet_file: str | None = None, alphabet: str | None = None):
        self.alphabet_file = alphabet_file
        self.alphabet = alphabet

    def fit(self, texts):
        self.alphabet = "".join(sorted(set("".join(texts))))
        return self

    def tokenize(self, text: str) -> list[str]:
        if self.alphabet is None:
            raise RuntimeError("not fitted")
        return [c for c in text if c in self.alphabet]

    def save_assets(self, model_dir) -> None:
        self.alphabet_file = "alphabet.txt"
        T.atomic_write_text(Path(model_dir) / self.alphabet_file, self.alphabet or "")

    def get_config(self) -> dict:
        return {**super().get_config(), "alphabet_file": self.alphabet_file}

    @classmethod
    def from_config(cls, cfg, model_dir=None):
        alphabet = (Path(model_dir) / cfg["alphabet_file"]).read_text(encoding="utf-8")
        return cls(cfg["alphabet_file"], alphabet)


def test_registry_get_and_config_round_trip() -> None:
    assert "basic" in T.available_tokenizers()
    tok = get_tokenizer("basic", lowercase=False)
    assert isinstance(tok, BasicTokenizer) and tok.lowercase is False
    cfg = tok.get_config()
    assert cfg["name"] == "basic"
    json.dumps(cfg)
    again = tokenizer_from_config(cfg)
    assert isinstance(again, BasicTokenizer) and again.lowercase is False
    assert get_tokenizer(tok) is tok
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer("nope")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_config({"name": "nope", "module": "os"})  # never imports outside rnnkit
    with pytest.raises(ValueError, match="bad options"):
        tokenizer_from_config({"name": "basic", "colour": "red"})


def test_register_tokenizer_rejects_name_clash_and_non_tokenizers() -> None:
    with pytest.raises(ValueError, match="already used"):
        @register_tokenizer("basic")
        class Other(Tokenizer):
            pass
    with pytest.raises(TypeError):
        register_tokenizer("x")(dict)  # type: ignore[arg-type]


def test_trainable_tokenizer_with_side_file_round_trips(tmp_path: Path) -> None:
    enc = TextEncoder(_CharTokenizer(), maxlen=6).fit(["abcab", "cab"], num_words=10)
    assert enc.vocab.words == ["a", "b", "c"]  # a:3, b:3 (alphabetical tie), c:2
    enc.save(tmp_path)
    assert (tmp_path / "alphabet.txt").read_text() == "abc"
    back = TextEncoder.load(tmp_path)
    assert isinstance(back.tokenizer, _CharTokenizer) and back.tokenizer.alphabet == "abc"
    assert torch.equal(back.encode(["abzzc", "x"]), enc.encode(["abzzc", "x"]))
    assert enc.encode("abzzc").tolist() == [[0, 0, 1, 3, 4, 5]]


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_fit_order_ties_and_cap() -> None:
    docs = [["b", "a", "c", "a"], ["c", "d", "b", "e"], ["a"]]
    # counts: a 3, b 2, c 2, d 1, e 1 -> ties alphabetical
    v = Vocabulary.fit(docs)
    assert v.words == ["a", "b", "c", "d", "e"] and v.counts == [3, 2, 2, 1, 1]
    assert len(v) == 8 and v.index["a"] == 3 and v.index["e"] == 7
    # the order of the texts does not matter
    assert Vocabulary.fit(docs[::-1]).words == v.words
    capped = Vocabulary.fit(docs, num_words=5)  # ids 3, 4 -> 2 words
    assert capped.words == ["a", "b"] and len(capped) == 5 and capped.num_words == 5
    assert capped.encode(["a", "b", "c", "zzz"]) == [1, 3, 4, 2, 2]
    assert capped.encode(["a", "c"], add_start=False) == [3, 2]
    assert capped.decode([0, 1, 3, 4, 2]) == ["<pad>", "<start>", "a", "b", "<oov>"]
    assert capped.decode([0, 1, 3, 2], skip_special=True) == ["a"]
    with pytest.raises(ValueError, match="outside"):
        capped.decode([5])
    assert Vocabulary.fit(docs, min_count=2).words == ["a", "b", "c"]
    with pytest.raises(ValueError, match="num_words"):
        Vocabulary.fit(docs, num_words=2)
    with pytest.raises(TypeError, match="tokenize"):
        Vocabulary.fit(["not", "tokenized"])


def test_vocabulary_json_round_trip_and_corruption(tmp_path: Path) -> None:
    v = Vocabulary.fit([["x", "y", "y", "ü"]], num_words=100)
    d = v.to_json()
    assert json.loads(json.dumps(d)) == d
    assert Vocabulary.from_json(d) == v
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w == v and w.counts == v.counts
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"words": [1, 2]}))
    with pytest.raises(UserError, match="corrupt"):
        Vocabulary.load(tmp_path / "bad2.json")
    with pytest.raises(UserError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")
    for bad in ({"words": ["a", "a"]}, {"words": ["a"], "oov": 5},
                {"words": ["a", "b"], "num_words": 4}, {"words": ["a"], "counts": [1, 2]}):
        with pytest.raises(ValueError):
            Vocabulary.from_json(bad)


def _keras_imdb_ids(ranks: list[int], num_words: int) -> list[int]:
    """keras.datasets.imdb.load_data's id rule for one review of raw frequency ranks (its
    defaults start_char=1, oov_char=2, index_from=3, skip_top=0)."""
    ids = [1] + [r + 3 for r in ranks]
    return [w if w < num_words else 2 for w in ids]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=30), st.integers(3, 50))
def test_vocabulary_matches_keras_imdb_id_convention(ranks: list[int], num_words: int) -> None:
    words = [f"w{r}" for r in range(1, 41)]  # word of rank r is w{r}
    v = Vocabulary.from_word_index({w: i + 1 for i, w in enumerate(words)}, num_words)
    assert v.encode([f"w{r}" for r in ranks]) == _keras_imdb_ids(ranks, num_words)
    assert len(v) == min(num_words, 44)  # Keras leaves id 3 unused: 40 words -> ids 4..43


def test_vocabulary_fit_ids_are_frequency_ranks_from_3() -> None:
    """Like Keras's ids but one lower: Keras's first word is 4 (3 unused), ours is 3."""
    rng = np.random.default_rng(0)
    docs = [[f"t{int(i)}" for i in rng.zipf(1.5, size=50) if i < 200] for _ in range(200)]
    v = Vocabulary.fit(docs, num_words=20)
    counts: dict[str, int] = {}
    for d in docs:
        for t in d:
            counts[t] = counts.get(t, 0) + 1
    rank = {w: r + 1 for r, w in enumerate(sorted(counts, key=lambda w: (-counts[w], w)))}
    for d in docs[:20]:
        keras_ids = _keras_imdb_ids([rank[t] for t in d], 21)  # Keras with one more id
        assert v.encode(d) == [1] + [k - 1 if k > 3 else k for k in keras_ids[1:]]


def test_real_keras_subset_decodes_with_the_same_convention(data_dir: Path) -> None:
    """The shared imdb_keras_subset.npz (Keras load_data(num_words=500) ids) follows the
    conventions Vocabulary.from_word_index reproduces: 1 start, 2 oov, words 4..499."""
    from conftest import require_file

    from rnnkit.datasets import load_imdb

    require_file(data_dir, "imdb_keras_subset.npz")
    (x, _), _ = load_imdb(data_dir, format="keras", download=False)
    flat = np.concatenate([np.asarray(s) for s in x])
    assert all(s[0] == 1 for s in x) and flat.max() == 499 and not (flat == 3).any()
    v = Vocabulary.from_word_index({f"w{r}": r for r in range(1, 1000)}, num_words=500)
    assert len(v) == 500 and v.id("w496") == 499 and v.id("w497") == 2


# --------------------------------------------------------------------------- pad_sequences


@settings(max_examples=100, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(-5, 1000), max_size=12), min_size=1, max_size=8),
       maxlen=st.one_of(st.none(), st.integers(1, 15)),
       padding=st.sampled_from(["pre", "post"]), truncating=st.sampled_from(["pre", "post"]),
       value=st.integers(-3, 3), as_arrays=st.booleans())
def test_pad_sequences_matches_keras(seqs, maxlen, padding, truncating, value, as_arrays
                                     ) -> None:
    """Lists of ints take the vectorised path, numpy rows the general loop: both = Keras."""
    import keras

    if maxlen is None and max(map(len, seqs)) == 0:
        maxlen = 1  # Keras would build a (n, 0) array the same way; keep shapes non-empty
    if as_arrays:
        seqs = [np.asarray(s, dtype=np.int64) for s in seqs]
    want = keras.utils.pad_sequences(seqs, maxlen=maxlen, dtype="int64", padding=padding,
                                     truncating=truncating, value=value)
    got = pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating, value=value)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_pad_sequences_defaults_items_and_errors() -> None:
    import keras

    seqs = [[1], [2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(pad_sequences(seqs), [[0, 0, 1], [0, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=2), [[0, 1], [2, 3], [5, 6]])
    vec = [np.ones((2, 3)), np.zeros((0, 3)), 2 * np.ones((4, 3))]
    np.testing.assert_array_equal(
        pad_sequences(vec, maxlen=3, dtype=np.float32, value=-1.0),
        keras.utils.pad_sequences(vec, maxlen=3, dtype="float32", value=-1.0))
    assert pad_sequences([], maxlen=4).shape == (0, 4)
    with pytest.raises(ValueError, match="padding"):
        pad_sequences(seqs, padding="middle")
    with pytest.raises(ValueError, match="truncating"):
        pad_sequences(seqs, truncating="both")
    with pytest.raises(ValueError, match="maxlen"):
        pad_sequences(seqs, maxlen=-1)
    with pytest.raises(ValueError, match="shape"):
        pad_sequences([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="list of sequences"):
        pad_sequences([1, 2])


# --------------------------------------------------------------------------- lengths


def test_length_stats_against_numpy() -> None:
    lengths = [5, 1, 9, 3, 100, 7, 7, 2]
    s = length_stats(lengths)
    assert s["count"] == 8 and s["min"] == 1 and s["max"] == 100
    assert s["mean"] == pytest.approx(np.mean(lengths))
    assert s["median"] == pytest.approx(6.0)
    assert s["p90"] == pytest.approx(np.percentile(lengths, 90))
    line = T.format_length_stats(s)
    assert line.startswith("8 texts") and "median 6" in line and "max 100" in line
    with pytest.raises(ValueError):
        length_stats([])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=60), st.floats(1, 100))
def test_suggest_maxlen_is_the_smallest_covering_length(lengths, pct) -> None:
    m = suggest_maxlen(lengths, pct)
    covered = np.mean(np.asarray(lengths) <= m) * 100
    assert covered >= pct - 1e-9
    if m > 1:  # one less would leave too many texts truncated
        assert np.mean(np.asarray(lengths) <= m - 1) * 100 < pct
    assert suggest_maxlen(lengths, pct, multiple_of=8) % 8 == 0


# --------------------------------------------------------------------------- TextEncoder

TEXTS = ["A good movie. Good acting!", "Bad, bad film.<br />Really bad.", "good film",
         "an unusual word here"]


def test_text_encoder_is_the_documented_pipeline() -> None:
    enc = TextEncoder(maxlen=5).fit(TEXTS, num_words=6)
    # counts: bad 3, good 3, film 2 ... -> ids bad 3, good 4, film 5 (num_words 6)
    assert enc.vocab.words == ["bad", "good", "film"] and enc.num_ids == 6
    x = enc.encode(TEXTS)
    assert x.dtype == torch.int64 and x.shape == (4, 5)
    tok = BasicTokenizer()
    want = pad_sequences([enc.vocab.encode(tok.tokenize(t)) for t in TEXTS], 5)
    np.testing.assert_array_equal(x.numpy(), want)
    assert x[2].tolist() == [0, 0, 1, 4, 5]
    assert enc.lengths(TEXTS) == [6, 6, 3, 5]
    assert enc.decode(x[2]) == "good film"
    assert enc.encode_ids(["good unknownword"]) == [[1, 4, 2]]
    oh = one_hot(x, enc.num_ids)
    assert oh.shape == (4, 5, 6) and torch.equal(oh.argmax(-1), x)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["good", "bad", "film", "odd", "x"]), max_size=9)
                .map(" ".join), min_size=1, max_size=5),
       st.one_of(st.none(), st.integers(1, 6)), st.sampled_from(["pre", "post"]),
       st.sampled_from(["pre", "post"]), st.booleans())
def test_text_encoder_encode_equals_pad_of_full_ids(texts, maxlen, padding, truncating,
                                                     add_start) -> None:
    enc = TextEncoder(maxlen=maxlen, padding=padding, truncating=truncating,
                      add_start=add_start).fit(TEXTS, num_words=6)
    ids = enc.encode_ids(texts)
    if maxlen is None and max(map(len, ids)) == 0:
        return
    want = pad_sequences(ids, maxlen, padding, truncating)
    np.testing.assert_array_equal(enc.encode(texts).numpy(), want)


_PIECES = st.sampled_from(["good", "bad", "film", "Σ", "ΑΣ", ".Σ", "A.", "don't", "<br />",
                            "<br", "/>", " ", " ", "\n", "\t", "é", "\u0301", ",", "x_y", "İ"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_PIECES, min_size=0, max_size=400).map("".join), min_size=1,
                max_size=3),
       st.integers(1, 12), st.sampled_from(["pre", "post"]), st.booleans())
def test_long_text_shortcut_gives_the_full_tokenization_result(texts, maxlen, truncating,
                                                               add_start) -> None:
    """encode() tokenizes only the kept end of long texts; must equal tokenizing it all."""
    enc = TextEncoder(maxlen=maxlen, truncating=truncating, add_start=add_start)
    enc.fit(["good bad film σ ς αςσ é dont"], num_words=20)
    want = pad_sequences(enc.encode_ids(texts), maxlen, "pre", truncating)
    np.testing.assert_array_equal(enc.encode(texts).numpy(), want)


@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_long_text_shortcut_cuts_at_whitespace(truncating: str) -> None:
    long_word = "good" * 30  # longer than the cut margin: a cut inside it would split it
    enc = TextEncoder(maxlen=2, truncating=truncating, add_start=False)
    enc.fit([long_word + " film a.ς br"], 10)
    if truncating == "pre":
        text = "film " * 100 + long_word + " film"
        # "A.Σ" lowercases to "a.ς" only when the "A." before the sigma is seen
        text2 = "film " * 100 + "A.Σ"
    else:
        text = "film " + long_word + " film" * 100
        text2 = "A.Σ " + "film " * 100
    # a cut at the space inside "<br />" must not leave a token "br" behind
    text3 = ("film <br />" + "z" * 100 + " film" * 50 if truncating == "post"
             else " film" * 50 + "z" * 100 + "<br /> film")
    texts = [text, text2, text3]
    assert torch.equal(enc.encode(texts), enc.pad(enc.encode_ids(texts)))
    assert long_word in enc.decode(enc.encode(text)[0])


def test_fit_encode_equals_fit_then_encode() -> None:
    a = TextEncoder(maxlen=4)
    xa = a.fit_encode(TEXTS, num_words=7)
    b = TextEncoder(maxlen=4).fit(TEXTS, num_words=7)
    assert a.vocab == b.vocab and torch.equal(xa, b.encode(TEXTS))


def test_text_encoder_save_load_round_trip(tmp_path: Path) -> None:
    enc = TextEncoder(maxlen=7, padding="post", truncating="post").fit(TEXTS, num_words=50)
    path = enc.save(tmp_path / "model")
    assert path.name == "text.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    assert cfg["tokenizer"]["name"] == "basic" and cfg["maxlen"] == 7
    back = TextEncoder.load(tmp_path / "model")
    assert back.vocab == enc.vocab and (back.padding, back.truncating) == ("post", "post")
    new = ["good film, really an odd one", "", "bad"]
    assert torch.equal(back.encode(new), enc.encode(new))


def test_text_encoder_load_errors_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        TextEncoder.load(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no vocabulary"):
        TextEncoder.load(tmp_path)
    enc = TextEncoder(maxlen=7).fit(TEXTS)
    enc.save(tmp_path)
    good = (tmp_path / "text.json").read_text(encoding="utf-8")
    corruptions = [
        good[: len(good) // 2],                          # truncated JSON
        json.dumps({"format": "something else"}),
        json.dumps({**json.loads(good), "vocabulary": {"words": "abc"}}),
        json.dumps({**json.loads(good), "maxlen": -3}),
        json.dumps({k: v for k, v in json.loads(good).items() if k != "tokenizer"}),
        json.dumps({**json.loads(good), "tokenizer": {"name": "no-such-tokenizer"}}),
    ]
    for bad in corruptions:
        (tmp_path / "text.json").write_text(bad, encoding="utf-8")
        with pytest.raises(UserError) as ei:
            TextEncoder.load(tmp_path)
        assert "\n" not in str(ei.value) and "text.json" in str(ei.value)
    (tmp_path / "text.json").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="corrupt"):
        TextEncoder.load(tmp_path)


def test_text_encoder_argument_errors() -> None:
    with pytest.raises(ValueError, match="fit"):
        TextEncoder().encode(["x"])
    with pytest.raises(ValueError, match="padding"):
        TextEncoder(padding="mid")
    with pytest.raises(ValueError, match="maxlen"):
        TextEncoder(maxlen=0)
    enc = TextEncoder().fit(TEXTS)
    with pytest.raises(TypeError, match="str"):
        enc.encode([b"bytes"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- real data


def test_real_imdb_vocabulary_and_lengths(imdb_raw) -> None:
    (train_x, train_y), _ = imdb_raw
    texts = train_x[:12500:25] + train_x[12500::25]  # 1000 reviews, both labels
    enc = TextEncoder(maxlen=100).fit(texts, num_words=500)
    assert set(enc.vocab.words[:3]) == {"the", "and", "a"}
    assert "br" not in enc.vocab and "dont" in enc.vocab and "don" not in enc.vocab
    x = enc.encode(texts)
    assert x.shape == (1000, 100) and int(x.max()) < 500 and int(x.min()) >= 0
    stats = length_stats(enc.lengths(texts))
    assert 150 < stats["mean"] < 350 and stats["median"] < stats["mean"] < stats["p90"]


def test_tokenization_progress_after_a_second(capsys):
    """With set_progress on, tokenizing many texts that takes over a second prints progress
    lines on stderr ending at 100%; quick or small jobs and the default print nothing."""
    import time

    from rnnkit.text import TextEncoder, set_progress

    enc = TextEncoder("basic")
    slow = enc.tokenizer.tokenize_many

    def tokenize_many(texts):
        time.sleep(0.3)
        return slow(texts)

    enc.tokenizer.tokenize_many = tokenize_many
    texts = ["a b c"] * 5000
    try:
        set_progress(True)
        enc.fit(texts)
        err = capsys.readouterr().err
        assert "tokenizing: 5,000/5,000 texts (100%" in err
        enc.fit(texts[:900])  # one chunk: no progress
        assert capsys.readouterr().err == ""
    finally:
        set_progress(False)
    enc.fit(texts)
    assert capsys.readouterr().err == ""
