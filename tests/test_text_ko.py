"""Korean morpheme tokenizer, sentencepiece subword tokenizer and the NSMC loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnnkit.errors import UserError
from rnnkit.nsmc import load_nsmc
from rnnkit.text import TextEncoder, available_tokenizers, get_tokenizer, tokenizer_from_config

FIXTURE = Path(__file__).parent / "fixtures" / "nsmc_small.txt"

kiwipiepy = pytest.importorskip("kiwipiepy", reason="the 'ko' extra (kiwipiepy) is not installed")
from rnnkit.text_ko import KoreanTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def ko() -> KoreanTokenizer:
    return KoreanTokenizer()


@pytest.fixture(scope="module")
def fixture_texts() -> tuple[list[str], list[int]]:
    texts, labels, _ = load_nsmc(FIXTURE, drop_duplicates=True)
    return texts, labels


# --------------------------------------------------------------------------- Korean tokenizer

def test_registered_lazily_by_name():
    assert {"basic", "ko", "sentencepiece"} <= set(available_tokenizers())
    tok = get_tokenizer("ko", pos="nouns")
    assert isinstance(tok, KoreanTokenizer) and tok.pos == ["NN", "NR", "NP"]


def test_morphemes_split_particles_and_endings(ko):
    toks = ko.tokenize("영화가 재밌었다")
    assert toks[:2] == ["영화", "가"]          # noun + subject particle
    assert "재밌" in toks and toks[-1] == "다"  # adjective stem ... final ending
    # morphemes of words without contraction concatenate back to the words
    for word in ["배우들연기가", "영화를", "감독의"]:
        assert "".join(ko.tokenize(word)) == word
    # same stem for different inflections: the point of morpheme tokenization
    a, b = ko.tokenize("재밌네요"), ko.tokenize("재밌었어요")
    assert a[0] == b[0] == "재밌"


def test_tags_and_pos_filter_agree_with_unfiltered_analysis(ko, fixture_texts):
    tagged = KoreanTokenizer(tags=True)
    for prefixes in (["N"], ["VA", "VV"], "content"):
        filt = KoreanTokenizer(pos=prefixes, tags=True)
        keep = tuple(filt.pos)
        for text in fixture_texts[0][:40]:
            full = tagged.tokenize(text)
            expected = [t for t in full if t.rsplit("/", 1)[1].startswith(keep)]
            assert filt.tokenize(text) == expected
    nouns = KoreanTokenizer(pos="N,XR").tokenize("이 영화는 정말 지루했다")
    assert "영화" in nouns and "는" not in nouns and "정말" not in nouns
    with pytest.raises(ValueError, match="matches no kiwipiepy tag"):
        KoreanTokenizer(pos=["QQ"])
    with pytest.raises(ValueError, match="pos is empty"):
        KoreanTokenizer(pos=[])


def test_stopwords_by_form_and_by_form_tag():
    text = "이 영화가 최고다 주인공이 좋다"
    plain = KoreanTokenizer(tags=True).tokenize(text)
    assert "이/MM" in plain and "이/JKS" in plain
    by_tag = KoreanTokenizer(tags=True, stopwords=["이/JKS", "가"]).tokenize(text)
    assert "이/MM" in by_tag and "이/JKS" not in by_tag and "가/JKS" not in by_tag
    by_form = KoreanTokenizer(stopwords="이,다").tokenize(text)
    assert "이" not in by_form and "다" not in by_form and "영화" in by_form
    kiwi = KoreanTokenizer(kiwi_stopwords=True)
    assert "가/JKS" in kiwi.stopwords and "가" not in kiwi.tokenize("영화가 좋다")
    # the built-in list is expanded into the saved config
    assert KoreanTokenizer(**_options(kiwi.get_config())).stopwords == kiwi.stopwords


def test_normalises_repeated_characters(ko):
    assert ko.normalize("ㅋㅋㅋㅋㅋㅋ 대박!!!!!") == "ㅋㅋ 대박!!"
    assert ko.tokenize("재밌다ㅋㅋㅋ") == ko.tokenize("재밌다ㅋㅋㅋㅋㅋㅋㅋㅋ")
    assert "ㅋㅋ" in ko.tokenize("재밌다 ㅋㅋㅋㅋㅋ")
    assert "ㅠㅠ" in ko.tokenize("별로다 ㅠㅠㅠㅠㅠ")
    off = KoreanTokenizer(max_repeat=0)
    assert off.normalize("ㅋㅋㅋㅋ!!!!") == "ㅋㅋㅋㅋ!!!!"
    assert KoreanTokenizer(max_repeat=1).normalize("와아아아 ㅋㅋㅋ") == "와아 ㅋ"
    # a jamo glued to the last syllable (최곸) is split off with normalize_coda
    assert "최고" in ko.tokenize("최곸ㅋㅋ")
    with pytest.raises(ValueError, match="max_repeat"):
        KoreanTokenizer(max_repeat=-1)


def test_spacing_correction_and_lowercase(ko):
    sp = KoreanTokenizer(spacing=True)
    s = sp.normalize("배우들연기가최고였어요")
    assert " " in s and s.replace(" ", "") == "배우들연기가최고였어요"
    assert "hello" in ko.tokenize("Hello 영화")
    assert "Hello" in KoreanTokenizer(lowercase=False).tokenize("Hello 영화")


def test_batch_equals_single_and_empty_texts(ko, fixture_texts):
    texts = ["", "   ", *fixture_texts[0][:30]]
    assert ko.tokenize_many(texts) == [ko.tokenize(t) for t in texts]
    assert ko.tokenize("") == [] and ko.tokenize_many([]) == []
    with pytest.raises(TypeError):
        ko.tokenize(None)  # type: ignore[arg-type]


def _options(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("name", "module")}


def test_config_round_trip_tokenizes_the_same(tmp_path, fixture_texts):
    texts = fixture_texts[0]
    tok = KoreanTokenizer(pos="content", stopwords=["영화"], max_repeat=3, tags=True)
    enc = TextEncoder(tok, maxlen=20).fit(texts[:300], num_words=200)
    enc.save(tmp_path)
    cfg = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer"]["name"] == "ko"
    assert cfg["tokenizer"]["pos"] == tok.pos and cfg["tokenizer"]["max_repeat"] == 3
    loaded = TextEncoder.load(tmp_path)
    assert isinstance(loaded.tokenizer, KoreanTokenizer)
    assert loaded.tokenizer.get_config() == tok.get_config()
    held_out = [*texts[300:], "이 영화 정말 재밌다 ㅋㅋㅋㅋ"]
    assert loaded.tokenize(held_out) == enc.tokenize(held_out)
    assert loaded.encode(held_out).equal(enc.encode(held_out))
    assert tokenizer_from_config(tok.get_config()).tokenize("결말이 최고") == \
        tok.tokenize("결말이 최고")


def test_version_mismatch_warns(tmp_path, fixture_texts):
    TextEncoder("ko", maxlen=10).fit(fixture_texts[0][:50]).save(tmp_path)
    path = tmp_path / "text.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer"]["kiwipiepy_version"] = "0.0.1"
    path.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    with pytest.warns(UserWarning, match="kiwipiepy 0.0.1"):
        TextEncoder.load(tmp_path)


def test_missing_extras_give_install_hint(monkeypatch, tmp_path, fixture_texts):
    TextEncoder("ko", maxlen=10).fit(fixture_texts[0][:50]).save(tmp_path / "ko")
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)   # import kiwipiepy -> ImportError
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(UserError, match=r"needs kiwipiepy: pip install 'rnnkit\[ko\]'"):
        KoreanTokenizer()
    with pytest.raises(UserError, match=r"rnnkit\[ko\]"):
        get_tokenizer("ko")
    with pytest.raises(UserError, match=r"rnnkit\[ko\]"):
        TextEncoder.load(tmp_path / "ko")
    from rnnkit.text_subword import SentencePieceTokenizer
    with pytest.raises(UserError, match=r"pip install 'rnnkit\[subword\]'"):
        SentencePieceTokenizer()


def test_modules_import_without_the_extras():
    code = ("import sys; sys.modules['kiwipiepy'] = None; sys.modules['sentencepiece'] = None\n"
            "import rnnkit.text_ko, rnnkit.text_subword, rnnkit.text as t\n"
            "print(t.get_tokenizer('basic').tokenize('ok'))\n"
            "try:\n    t.get_tokenizer('ko')\nexcept Exception as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines() == ["['ok']",
                                "Korean tokenization needs kiwipiepy: pip install 'rnnkit[ko]'"]


# --------------------------------------------------------------------------- NSMC loader

def _write(tmp_path: Path, text: str, name: str = "r.txt", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_nsmc_header_empty_missing_and_duplicates(tmp_path):
    p = _write(tmp_path, "id\tdocument\tlabel\n"
               "1\t아 더빙.. 진짜 짜증나네요 목소리\t0\n"
               "2\t\t1\n"                       # empty document
               "3\t   \t0\n"                    # only spaces: empty
               "4\t1\n"                         # missing document
               "\n"                             # blank line: ignored
               "5\t 흠...포스터보고 초딩영화줄....오버연기조차 가볍지 않구나 \t1\r\n"
               "6\t아 더빙.. 진짜 짜증나네요 목소리\t0\n"   # duplicate, same label
               "7\t아 더빙.. 진짜 짜증나네요 목소리\t1\n")  # duplicate, other label
    texts, labels, st = load_nsmc(p)
    dub, poster = "아 더빙.. 진짜 짜증나네요 목소리", "흠...포스터보고 초딩영화줄....오버연기조차 "
    assert texts == [dub, poster + "가볍지 않구나", dub, dub]
    assert labels == [0, 1, 0, 1]
    assert (st.lines, st.kept, st.empty, st.missing, st.duplicates) == (7, 4, 2, 1, 0)
    texts, labels, st = load_nsmc(p, drop_duplicates=True)
    assert labels == [0, 1] and len(texts) == 2
    assert (st.kept, st.duplicates, st.conflicting_duplicates, st.dropped) == (2, 2, 1, 5)
    assert st.as_dict()["dropped"] == 5 and "2 duplicate (1 with a different label)" in \
        st.summary()


def test_nsmc_without_header_with_bom(tmp_path):
    p = _write(tmp_path, "\ufeff10\t좋다\t1\n11\t싫다\t0", name="b.txt")
    texts, labels, st = load_nsmc(p)
    assert texts == ["좋다", "싫다"] and labels == [1, 0] and st.lines == 2


@pytest.mark.parametrize("body, message", [
    ("1\t좋다\t1\n2\t좋\t다\t1\n", r"b\.txt:3: expected 3 tab-separated fields"),
    ("1\t좋다\t1\n2\t싫다\tneg\n", r"b\.txt:3: label must be an integer"),
    ("1\t좋다\t1\n\t싫다\t0\n", r"b\.txt:3: empty id"),
    ("1\t1\n2\t\t0\n", r"no reviews"),
])
def test_nsmc_malformed_lines_name_file_and_line(tmp_path, body, message):
    p = _write(tmp_path, "id\tdocument\tlabel\n" + body, name="b.txt")
    with pytest.raises(UserError, match=message):
        load_nsmc(p)


def test_nsmc_bad_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_nsmc(tmp_path / "nope.txt")
    p = _write(tmp_path, "id\tdocument\tlabel\n1\t좋다\t1\n", encoding="cp949", name="c.txt")
    with pytest.raises(UserError, match=r"c\.txt:2: not UTF-8"):
        load_nsmc(p)


def test_fixture_counts():
    _, labels, st = load_nsmc(FIXTURE, drop_duplicates=True)
    assert (st.lines, st.kept, st.empty, st.missing, st.duplicates,
            st.conflicting_duplicates) == (411, 400, 4, 1, 6, 1)
    assert sum(labels) == 200


# --------------------------------------------------------------------------- sentencepiece

spm = pytest.importorskip("sentencepiece", reason="the 'subword' extra is not installed")


def test_sentencepiece_trains_and_round_trips(tmp_path, fixture_texts):
    from rnnkit.text_subword import MODEL_FILE, SentencePieceTokenizer

    texts = fixture_texts[0]
    tok = get_tokenizer("sentencepiece", vocab_size=300, character_coverage=1.0)
    assert isinstance(tok, SentencePieceTokenizer)
    with pytest.raises(ValueError, match="not trained"):
        tok.tokenize("영화")
    enc = TextEncoder(tok, maxlen=30).fit(texts[:300], num_words=400)
    assert 50 < len(tok.pieces) <= 300
    # pieces cover the text: joining them gives back the (space-normalised) text
    for t in texts[300:340]:
        if not any("\u3131" <= c <= "\u318e" for c in t):   # compatibility jamo are NFKC'd
            pieces = tok.tokenize(t)
            assert "".join(pieces).replace("\u2581", " ").strip() == " ".join(t.split())
    # same texts -> same model
    again = SentencePieceTokenizer(vocab_size=300, character_coverage=1.0).fit(texts[:300])
    assert again.get_config()["sha256"] == tok.get_config()["sha256"]

    enc.save(tmp_path)
    assert (tmp_path / MODEL_FILE).is_file()
    cfg = json.loads((tmp_path / "text.json").read_text(encoding="utf-8"))["tokenizer"]
    assert cfg["model_file"] == MODEL_FILE and len(cfg["sha256"]) == 64
    loaded = TextEncoder.load(tmp_path)
    held_out = texts[300:]
    assert loaded.tokenize(held_out) == enc.tokenize(held_out)
    assert loaded.encode(held_out).equal(enc.encode(held_out))

    other = SentencePieceTokenizer(vocab_size=100).fit(["completely different text"] * 20)
    other.save_assets(tmp_path)                     # replace the model file
    with pytest.raises(UserError, match="sha256 differs"):
        TextEncoder.load(tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(UserError, match="sentencepiece model .* is missing"):
        TextEncoder.load(tmp_path)


def test_sentencepiece_english_and_errors():
    from rnnkit.text_subword import SentencePieceTokenizer

    texts = ["This movie was great!<br /><br />Loved the acting.", "Boring and far too long.",
             "The plot was great, the acting was not."] * 10
    tok = SentencePieceTokenizer(vocab_size=60, character_coverage=1.0).fit(texts)
    pieces = tok.tokenize("This movie was GREAT")
    assert "".join(pieces).replace("\u2581", " ").strip() == "this movie was great"
    assert tok.tokenize_many(["a", "great"]) == [tok.tokenize("a"), tok.tokenize("great")]
    with pytest.raises(UserError, match="no non-empty training text"):
        SentencePieceTokenizer().fit(["", "  "])
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceTokenizer(model_type="wordpiece")
    with pytest.raises(ValueError, match="vocab_size"):
        SentencePieceTokenizer(vocab_size=2)
