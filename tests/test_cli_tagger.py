"""``rnnkit train tagger`` / ``rnnkit tag`` / ``evaluate`` end to end on the small fixtures,
and the one-line errors for malformed input."""

import json
from pathlib import Path

import pytest

from rnnkit.cli import main

FIX = Path(__file__).parent / "fixtures"


def _json_lines(out: str) -> list:
    """``predict``/``tag --json`` output: one JSON object per input line."""
    return [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tagger") / "m"
    argv = ["train", "tagger", "--train", str(FIX / "tiny.conllu"), "--test",
            str(FIX / "tiny.conllu"), "--epochs", "3", "--units", "8", "--embed-dim", "8",
            "--batch-size", "8", "--out", str(out), "--quiet", "--json", "--patience", "0"]
    return out, argv


def test_train_tag_evaluate(model, capsys):
    out, argv = model
    assert main(argv) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["epochs"] == 3 and res["tags"] >= 10
    assert 0 <= res["test"]["token_accuracy"] <= 1
    for f in ("weights.safetensors", "config.json", "tags.json", "data.json", "history.json",
              "history.png"):
        assert (out / f).is_file(), f

    assert main(["tag", str(out), "The dog sat .", "--json"]) == 0
    tagged = _json_lines(capsys.readouterr().out)
    assert [t["token"] for t in tagged[0]["tokens"]] == ["The", "dog", "sat", "."]
    assert all(t["tag"] != "<pad>" for t in tagged[0]["tokens"])

    assert main(["tag", str(out), "A cat ."]) == 0
    assert capsys.readouterr().out.strip().startswith("A/")

    assert main(["evaluate", str(out), "--json"]) == 2  # the data is named on the command line
    assert "--file" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--file", str(FIX / "tiny.conllu"), "--json"]) == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["tokens"] == res["test"]["tokens"]
    assert ev["token_accuracy"] == pytest.approx(res["test"]["token_accuracy"])


def test_malformed_training_file_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.conllu"
    bad.write_text("# sent\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n2\tthere\n", encoding="utf-8")
    code = main(["train", "tagger", "--train", str(bad), "--out", str(tmp_path / "m"),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert err.startswith("rnnkit: error: ") and f"{bad}:3:" in err


def test_tag_missing_model(tmp_path, capsys):
    assert main(["tag", str(tmp_path / "none"), "hello"]) == 2
    assert "model directory not found" in capsys.readouterr().err
