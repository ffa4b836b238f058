"""CLI of the sequence tasks: ``train seq2seq``/``translate``, ``train lm``/``generate``,
``train siamese``/``match``, ``evaluate`` on their models, one-line errors with exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.tasks.siamese import address_pairs, generate_addresses

FIX = Path(__file__).parent / "fixtures"


pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_seq2seq_cli(tmp_path, capsys):
    d = tmp_path / "s2s"
    code, out, _ = run(capsys, "train", "seq2seq", "--file", FIX / "pairs_en_fr.tsv", "--out", d,
                       "--epochs", "2", "--units", "8", "--embed-dim", "4", "--json")
    assert code == 0
    res = last_json(out)
    assert res["train_pairs"] == 108 and res["validation_pairs"] == 12
    assert {"val_bleu", "val_baseline_bleu"} <= res.keys()
    assert (d / "config.json").is_file() and (d / "metrics.json").is_file()
    code, out, _ = run(capsys, "translate", d, "I see the cat.", "We have the car.", "--json",
                       "--beam-width", "2")
    rows = [json.loads(x) for x in out.strip().splitlines()]
    assert code == 0 and [r["index"] for r in rows] == [0, 1]
    assert all(isinstance(r["translation"], str) for r in rows)
    code, out, _ = run(capsys, "evaluate", d, "--file", FIX / "pairs_en_fr.tsv", "--json")
    assert code == 0 and last_json(out)["n"] == 120


def test_lm_cli(tmp_path, capsys):
    d = tmp_path / "lm"
    code, out, _ = run(capsys, "train", "lm", "--file", FIX / "small_text.txt", "--out", d,
                       "--epochs", "1", "--units", "8", "--seq-len", "16", "--json")
    assert code == 0
    res = last_json(out)
    assert res["val_perplexity"] > 1 and res["val_unigram_perplexity"] > 1
    code, out, _ = run(capsys, "generate", d, "--prompt", "The ", "--length", "12",
                       "--temperature", "0.5", "--top-k", "3", "--seed", "1", "--json")
    assert code == 0
    text = last_json(out)["text"]
    assert text.startswith("The ") and len(text) == 16
    code, out, _ = run(capsys, "evaluate", d, "--file", FIX / "small_text.txt", "--json")
    assert code == 0 and last_json(out)["perplexity"] > 1


def test_siamese_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    refs = generate_addresses(60, rng)
    pairs, labels = address_pairs(refs, 200, rng)
    pf, rf = tmp_path / "pairs.tsv", tmp_path / "refs.txt"
    pf.write_text("".join(f"{a}\t{b}\t{y}\n" for (a, b), y in zip(pairs, labels, strict=True)))
    rf.write_text("\n".join(refs) + "\n")
    d = tmp_path / "sia"
    code, out, _ = run(capsys, "train", "siamese", "--file", pf, "--out", d, "--epochs", "1",
                       "--units", "8", "--json")
    assert code == 0 and 0 <= last_json(out)["val_auc"] <= 1
    code, out, _ = run(capsys, "match", d, refs[0], "--against", rf, "--top-k", "3", "--json")
    top = last_json(out)["top"]
    assert code == 0 and len(top) == 3 and top[0]["cosine"] >= top[1]["cosine"]
    code, out, _ = run(capsys, "evaluate", d, "--file", pf, "--json")
    assert code == 0 and "auc" in last_json(out)


@pytest.mark.parametrize("argv, content, message", [
    (["train", "seq2seq"], "a\tb\nno tab\n", r"bad.txt:2: expected 'source<TAB>target"),
    (["train", "siamese"], "a\tb\t1\nc\td\tyes\n", r"bad.txt:2: label must be"),
    (["train", "lm"], None, r"bad.txt:2: not UTF-8"),
])
def test_malformed_files_one_line_error(tmp_path, capsys, argv, content, message):
    bad = tmp_path / "bad.txt"
    if content is None:
        bad.write_bytes(b"good line\nbad \xff line\n")
    else:
        bad.write_text(content)
    code, out, err = run(capsys, *argv, "--file", bad, "--out", tmp_path / "m", "--epochs", "1")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err) and err.startswith("rnnkit: error: ")


def test_wrong_model_kind_and_missing_files(tmp_path, capsys):
    d = tmp_path / "lm"
    assert run(capsys, "train", "lm", "--file", FIX / "small_text.txt", "--out", d, "--epochs",
               "1", "--units", "4", "--seq-len", "8", "--quiet")[0] == 0
    code, _, err = run(capsys, "translate", d, "hello")
    assert code == 2 and "holds a 'lm' model, not a 'seq2seq' model" in err
    code, _, err = run(capsys, "match", d, "q", "--against", tmp_path / "none.txt")
    assert code == 2 and err.count("\n") == 1
    code, _, err = run(capsys, "generate", tmp_path / "nowhere")
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "generate", d, "--top-k", "0")
    assert code == 2 and "--top-k" in err


def test_patience_needs_validation(tmp_path, capsys):
    code, _, err = run(capsys, "train", "seq2seq", "--file", FIX / "pairs_en_fr.tsv", "--out",
                       tmp_path / "m", "--validation-split", "0", "--patience", "2")
    assert code == 2 and "--patience needs a validation split" in err


def test_too_few_pairs_for_a_validation_part_is_said(tmp_path, capsys):
    """Four pairs at --validation-split 0.1 hold out none: training goes on, and stderr says
    that no epoch is selected by validation BLEU; with ten, one pair validates and no
    warning is printed."""
    f = tmp_path / "p.tsv"
    lines = [f"word{i} .\tmot{i} ." for i in range(10)]
    f.write_text("\n".join(lines[:4]) + "\n")
    code, _, err = run(capsys, "train", "seq2seq", "--file", f, "--out", tmp_path / "a",
                       "--epochs", "1", "--quiet")
    assert code == 0 and "warning" in err and "4 pair(s) leave no validation pairs" in err
    f.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "train", "seq2seq", "--file", f, "--out", tmp_path / "b",
                       "--epochs", "1", "--quiet")
    assert code == 0 and "warning" not in err
