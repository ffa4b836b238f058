"""End to end: ``rnnkit train text --format nsmc --lang ko`` -> evaluate -> predict, on the
synthetic Korean fixture; tokenizer flags; missing-extra messages from the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rnnkit.cli import main

pytest.importorskip("kiwipiepy", reason="the 'ko' extra (kiwipiepy) is not installed")

FIXTURE = Path(__file__).parent / "fixtures" / "nsmc_small.txt"
TINY = ["--cell", "gru", "--units", "8", "--embed-dim", "16", "--num-words", "200",
        "--maxlen", "20", "--epochs", "6", "--batch-size", "32", "--lr", "0.01", "--quiet",
        "--json"]


@pytest.fixture(scope="module")
def split_files(tmp_path_factory) -> tuple[Path, Path]:
    """The fixture's first 311 data lines (with its empty/missing/duplicate lines) for training
    and its last 100 (disjoint reviews) as held-out test file, both with the NSMC header."""
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    d = tmp_path_factory.mktemp("nsmc")
    train, test = d / "ratings_train.txt", d / "ratings_test.txt"
    train.write_text("\n".join(lines[:312]) + "\n", encoding="utf-8")
    test.write_text("\n".join([lines[0], *lines[312:]]) + "\n", encoding="utf-8")
    return train, test


def _json_lines(out: str) -> list:
    """``predict``/``tag --json`` output: one JSON object per input line."""
    return [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ko_model(split_files, tmp_path_factory) -> tuple[Path, dict]:
    train, test = split_files
    out = tmp_path_factory.mktemp("models") / "ko"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["train", "text", "--file", str(train), "--format", "nsmc", "--lang", "ko",
                   "--drop-duplicates", "--test-file", str(test), "--out", str(out), *TINY])
    assert rc == 0
    return out, _last_json(buf.getvalue())


def test_train_nsmc_ko_learns_above_chance(ko_model):
    out, res = ko_model
    assert res["data_stats"] == {"lines": 311, "kept": 300, "empty": 4, "missing": 1,
                                 "duplicates": 6, "conflicting_duplicates": 1, "dropped": 11}
    assert res["labels"] == ["negative", "positive"]
    test = res["test"]
    assert test["n"] == 100
    # held-out reviews: far above the majority-class baseline (chance)
    assert test["accuracy"] >= 0.8 > test["baseline_majority_accuracy"] + 0.1
    tok = json.loads((out / "text.json").read_text(encoding="utf-8"))["tokenizer"]
    assert tok["name"] == "ko" and tok["max_repeat"] == 2


def test_evaluate_and_predict_tokenize_like_training(ko_model, split_files, capsys):
    out, res = ko_model
    assert main(["evaluate", str(out), "--file", str(split_files[1]), "--json"]) == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["accuracy"] == res["test"]["accuracy"] and ev["n"] == 100
    assert main(["predict", str(out), "이 영화 정말 재밌다", "시간 낭비 최악이다 ㅠㅠㅠㅠ",
                 "--json"]) == 0
    preds = _json_lines(capsys.readouterr().out)
    assert [p["label"] for p in preds] == ["positive", "negative"]
    # same model, same texts -> the library gives the same probabilities
    from rnnkit.tasks.classify import TextClassifier
    clf = TextClassifier.load(out)
    assert [p["probability"] for p in clf.predict(["이 영화 정말 재밌다",
                                                   "시간 낭비 최악이다 ㅠㅠㅠㅠ"])] == \
        [p["probability"] for p in preds]
    assert main(["predict", str(out), "배우들 연기가 너무 좋았어요"]) == 0
    assert capsys.readouterr().out.startswith("positive\t")


def test_sentencepiece_option_end_to_end(split_files, tmp_path, capsys):
    train, test = split_files
    out = tmp_path / "spm"
    assert main(["train", "text", "--file", str(train), "--format", "nsmc", "--tokenizer",
                 "sentencepiece", "--subword-vocab", "150", "--test-file", str(test),
                 "--out", str(out), *TINY]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["test"]["accuracy"] >= 0.7
    assert (out / "sentencepiece.model").is_file()
    tok = json.loads((out / "text.json").read_text(encoding="utf-8"))["tokenizer"]
    assert tok["name"] == "sentencepiece" and tok["vocab_size"] == 150
    assert main(["predict", str(out), "이 영화 정말 재밌다", "--json"]) == 0
    assert len(_json_lines(capsys.readouterr().out)) == 1


@pytest.mark.parametrize("flags, message", [
    (["--pos", "N"], "--pos: options of Korean tokenization; add --lang ko"),
    (["--lang", "ko", "--pos", "QQ"], "matches no kiwipiepy tag"),
    (["--lang", "ko", "--max-repeat", "-1"], "--max-repeat must be >= 0"),
    (["--subword-vocab", "100"], "--subword-vocab only applies to --tokenizer sentencepiece"),
    (["--lang", "ko", "--stopwords", "@/nonexistent/stop.txt"], "stopword file not found"),
])
def test_tokenizer_flag_errors(split_files, tmp_path, capsys, flags, message):
    train, _ = split_files
    rc = main(["train", "text", "--file", str(train), "--format", "nsmc",
               "--out", str(tmp_path / "m"), *flags, *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_stopword_file_and_pos_reach_the_saved_tokenizer(tmp_path):
    from rnnkit.cli import build_parser
    from rnnkit.cli.tokenizer_args import make_tokenizer

    stop = tmp_path / "stop.txt"
    stop.write_text("# particles\n이/JKS\n가\n", encoding="utf-8")
    args = build_parser().parse_args(["train", "text", "--file", "x", "--lang", "ko", "--pos",
                                      "content", "--stopwords", f"@{stop}", "--morph-tags"])
    tok = make_tokenizer(args)
    assert tok.stopwords == ["가", "이/JKS"] and tok.tags and "NN" in tok.pos
    assert tok.tokenize("주인공이 좋다") == ["주인공/NNG", "좋/VA"]


def test_missing_kiwipiepy_is_one_line_with_install_hint(ko_model, split_files, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)
    train, _ = split_files
    rc = main(["train", "text", "--file", str(train), "--lang", "ko",
               "--out", str(tmp_path / "m"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == ("rnnkit: error: Korean tokenization needs kiwipiepy: "
                           "pip install 'rnnkit[ko]'")
    assert main(["predict", str(ko_model[0]), "이 영화 정말 재밌다"]) == 2
    assert "pip install 'rnnkit[ko]'" in capsys.readouterr().err
