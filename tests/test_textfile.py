"""Text classification from files: CSV/TSV/SMS readers and their one-line errors (file and
line), seeded splits, learning on small fixtures (beats the majority-class baseline), and the
``rnnkit train text`` / ``evaluate`` / ``predict`` CLI."""

import json
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.errors import UserError
from rnnkit.tasks.textfile import (
    encode_labels,
    label_names,
    read_labelled,
    read_sms_spam,
    split_data,
)

FIX = Path(__file__).parent / "fixtures"
SMS = FIX / "sms_spam_tiny.tsv"
NEWS = FIX / "headlines_tiny.csv"


def _json_lines(out: str) -> list:
    """``predict``/``tag --json`` output: one JSON object per input line."""
    return [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


def test_read_sms_and_csv():
    sms = read_labelled(SMS)
    assert len(sms) == 160 and set(sms.labels) == {"ham", "spam"}
    assert sms.texts[0].startswith("Don't forget")
    news = read_labelled(NEWS, "headline", "topic")
    assert len(news) == 150 and label_names(news.labels) == ["business", "sports", "tech"]
    # a quoted field keeps its comma
    assert news.texts[0] == "Tennis: champion knocked out in the second round, fans stunned"
    by_index = read_labelled(NEWS, "1", "2")
    assert by_index.texts == news.texts and by_index.labels == news.labels


def test_tsv_with_header_and_multiline_field(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text('label\ttext\nham\t"two\nlines"\nspam\tWIN NOW\n', encoding="utf-8")
    d = read_labelled(p, "text", "label")
    assert d.texts == ["two\nlines", "WIN NOW"] and d.labels == ["ham", "spam"]


@pytest.mark.parametrize("name,text,cols,msg", [
    ("a.tsv", "ham\tok\nspam no tab here\n", (None, None),
     r"a\.tsv:2: expected 'label<TAB>text'"),
    ("b.tsv", "ham\tok\n\t hello\n", (None, None), r"b\.tsv:2: empty label"),
    ("c.csv", "text,label\nhello,pos\nhi there, friend,neg\n", ("text", "label"),
     r"c\.csv:3: 3 fields, the header has 2"),
    ("d.csv", "text,label\nhello,\n", ("text", "label"), r"d\.csv:2: empty label"),
    ("e.csv", "text,label\n\"a\nb\",pos\n,neg\n", ("text", "label"), r"e\.csv:4: empty text"),
    ("f.csv", "body,y\nhello,pos\n", ("text", "y"), r"f\.csv: no text column 'text'"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, text, cols, msg):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=msg) as e:
        read_labelled(p, *cols)
    assert "\n" not in str(e.value)


def test_files_not_in_utf8_are_decoded_and_say_how(tmp_path):
    """A Windows-1252 file (the Kaggle SMS spam CSV is one) reads as such, a CP949 Korean one
    as CP949, UTF-8 with or without a BOM as UTF-8; the set records which, for the note."""
    from rnnkit.tasks.textfile import decode_text

    p = tmp_path / "latin.tsv"
    p.write_bytes(b"ham\tok\nspam\tcaf\xe9 \x80 5\n")
    d = read_sms_spam(p)
    assert d.texts == ["ok", "café € 5"] and d.encoding == "cp1252"
    ko = "정말 재미있는 영화였다"
    assert decode_text(ko.encode("cp949")) == (ko, "cp949")
    assert decode_text(("\ufeff" + ko).encode("utf-8")) == (ko, "utf-8")
    assert decode_text("café".encode("cp1252")) == ("café", "cp1252")
    assert decode_text(b"plain text \x81 end") == ("plain text \x81 end", "latin-1")
    assert read_sms_spam(SMS).encoding == "utf-8"


def test_split_is_seeded_and_disjoint():
    d = read_labelled(SMS)
    a = split_data(d, 0.2, 0.1, seed=3)
    b = split_data(d, 0.2, 0.1, seed=3)
    assert [x.texts for x in a] == [x.texts for x in b]
    assert sum(len(x) for x in a) == len(d) and abs(len(a[2]) - 32) <= 1
    # stratified: each part has the file's label proportions (within one example per label)
    from collections import Counter

    full = Counter(d.labels)
    for part, frac in ((a[2], 0.2),):
        got = Counter(part.labels)
        assert all(abs(got[k] - round(v * frac)) <= 1 for k, v in full.items()), got
    with pytest.raises(UserError, match="not known to the model"):
        encode_labels(["ham", "eggs"], ["ham", "spam"])
    with pytest.raises(UserError, match="at least 2 distinct labels"):
        label_names(["ham", "ham"])


@pytest.mark.parametrize("fixture,cols,multi", [(SMS, [], False),
                                                (NEWS, ["--text-col", "headline",
                                                        "--label-col", "topic"], True)])
def test_cli_train_evaluate_predict(tmp_path, capsys, fixture, cols, multi):
    out = tmp_path / "m"
    argv = ["train", "text", "--file", str(fixture), *cols, "--epochs", "6", "--units", "8",
            "--embed-dim", "8", "--num-words", "500", "--maxlen", "30", "--mask",
            "--batch-size", "16", "--patience", "0", "--out", str(out), "--quiet", "--json",
            "--lr", "0.01", "--dropout", "0"]  # the tiny templated fixture: fast settings
    assert main(argv) == 0
    res = _last_json(capsys.readouterr().out)
    test = res["test"]
    assert test["accuracy"] >= 0.85
    assert test["accuracy"] > test["baseline_majority_accuracy"] + 0.1
    k = 3 if multi else 2
    assert len(test["confusion_matrix"]) == k and sum(map(sum, test["confusion_matrix"])) == \
        test["n"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "text" and len(cfg["labels"]) == k
    # binary -> one sigmoid unit, multi-class -> softmax over k
    assert cfg["model"]["config"]["layers"][-1]["config"]["units"] == (k if multi else 1)

    assert main(["evaluate", str(out), "--file", str(fixture), "--json"]) == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["accuracy"] == test["accuracy"] and ev["n"] == test["n"]

    text = "WINNER! Claim your FREE prize, call now" if not multi else \
        "United beat City 2-1 in the cup final"
    assert main(["predict", str(out), text, "--json"]) == 0
    pred = _json_lines(capsys.readouterr().out)[0]
    assert pred["label"] == ("sports" if multi else "spam")
    assert set(pred["probabilities"]) == set(cfg["labels"])


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\tfine\nspam\n", encoding="utf-8")
    assert main(["train", "text", "--file", str(bad), "--out", str(tmp_path / "m"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:2: expected 'label<TAB>text'" in err
    assert main(["train", "text", "--file", str(NEWS), "--text-col", "headline",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "needs both a text column and a label column" in capsys.readouterr().err


def test_a_header_line_is_not_a_class(tmp_path, capsys):
    """Issue 14's trap: 'Label<TAB>SMS' on line 1 became a third class, silently."""
    from rnnkit.tasks.textfile import read_sms_spam

    body = "".join(f"{'spam' if i % 3 else 'ham'}\tmessage number {i}\n" for i in range(30))
    f = tmp_path / "spam.tsv"
    f.write_text("Label\tSMS\n" + body)
    d = read_sms_spam(f)
    assert sorted(set(d.labels)) == ["ham", "spam"] and len(d) == 30
    assert d.skipped_header == "Label\tSMS"
    g = tmp_path / "odd.tsv"  # a label seen once where every other label repeats
    g.write_text("kind\ttext\n" + body)
    assert read_sms_spam(g).skipped_header is not None
    plain = tmp_path / "plain.tsv"
    plain.write_text(body)
    assert read_sms_spam(plain).skipped_header is None and len(read_sms_spam(plain)) == 30
    out = tmp_path / "m"
    assert main(["train", "text", "--file", str(f), "--epochs", "1", "--units", "4",
                 "--embed-dim", "4", "--quiet", "--json", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "looks like a header" in cap.err
    assert json.loads(cap.out.strip().splitlines()[-1])["labels"] == ["ham", "spam"]


def test_train_text_chooses_maxlen_from_the_data(tmp_path, capsys):
    """Without --maxlen, train text pads/truncates to the 90th percentile of the training
    texts' encoded lengths (within [8, 256]); --maxlen still wins."""
    import json

    import numpy as np

    from rnnkit.cli import main

    f = tmp_path / "t.csv"
    rows = [f"{'good ' * (3 + i % 40)}film,pos" if i % 2 else f"{'bad ' * (3 + i % 40)}film,neg"
            for i in range(200)]
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m"
    assert main(["train", "text", "--file", str(f), "--text-col", "text", "--label-col",
                 "label", "--epochs", "1", "--out", str(out), "--test-fraction", "0.2"]) == 0
    text_cfg = json.loads((out / "text.json").read_text())
    lengths = [4 + i % 40 + 1 for i in range(200)]  # words + "film" + the start id
    # the training part is 72% of the rows (stratified): its percentile is close to all's
    assert abs(text_cfg["maxlen"] - np.percentile(lengths, 90)) <= 3
    assert "maxlen" in capsys.readouterr().out
    assert main(["train", "text", "--file", str(f), "--text-col", "text", "--label-col",
                 "label", "--epochs", "1", "--out", str(tmp_path / "m2"), "--maxlen", "12",
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "m2" / "text.json").read_text())["maxlen"] == 12


def test_cli_notes_the_encoding_it_read(tmp_path, capsys):
    from rnnkit.cli import main

    f = tmp_path / "spam.csv"
    rows = [("ham", "see you at the café"), ("spam", "win £500 now text WIN")] * 20
    f.write_bytes(("v1,v2\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode("cp1252"))
    assert main(["train", "text", "--file", str(f), "--text-col", "v2", "--label-col", "v1",
                 "--epochs", "1", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert "is not UTF-8 text: read as cp1252" in capsys.readouterr().err


def test_tsv_that_does_not_quote_its_fields_is_read_line_by_line(tmp_path, capsys):
    """A review starting with a double quote in a TSV that does not quote fields would
    swallow the lines after it (the CSV reader's quoting): the reader notices the field
    running over tabs and line breaks and rereads the file with quotes as characters. A
    TSV that does quote (``""`` escapes, as korean_hate_speech) keeps its quoting."""
    from rnnkit.cli import main

    p = tmp_path / "raw.tsv"
    rows = ['"great movie\tpos', "terrible\tneg", 'ok "fine" really\tpos', "bad\tneg"] * 10
    p.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    d = read_labelled(p, "text", "label")
    assert len(d) == 40 and d.quotes_literal
    assert d.texts[:3] == ['"great movie', "terrible", 'ok "fine" really']
    q = tmp_path / "quoted.tsv"
    q.write_text('text\tlabel\n"he said ""hi"" twice"\tpos\nplain\tneg\n', encoding="utf-8")
    d = read_labelled(q, "text", "label")
    assert d.texts == ['he said "hi" twice', "plain"] and not d.quotes_literal
    assert main(["train", "text", "--file", str(p), "--text-col", "text", "--label-col",
                 "label", "--epochs", "1", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert "does not quote its fields" in capsys.readouterr().err


def test_labels_differing_only_in_case_are_warned_about(tmp_path, capsys):
    from rnnkit.cli import main

    p = tmp_path / "mixed.tsv"
    rows = ["spam\twin cash now", "ham\tsee you soon", "Spam\tfree prize call"] * 10
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["train", "text", "--file", str(p), "--epochs", "1", "--out",
                 str(tmp_path / "m"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "labels differing only in case are different classes: 'Spam' / 'spam'" in err
    assert main(["train", "text", "--file", str(FIX / "sms_spam_tiny.tsv"), "--epochs", "1",
                 "--out", str(tmp_path / "n"), "--quiet"]) == 0
    assert "differing only in case" not in capsys.readouterr().err
