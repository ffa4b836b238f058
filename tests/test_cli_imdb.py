"""The IMDB CLI end to end on real data, and its answers to user mistakes."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnnkit.cli import main


def _json_lines(out: str) -> list:
    """``predict``/``tag --json`` output: one JSON object per input line."""
    return [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """A small IMDB model trained through the CLI (2,000 reviews, a few epochs)."""
    data_dir = request.getfixturevalue("data_dir")
    out = tmp_path_factory.mktemp("imdb") / "model"
    argv = ["train", "imdb", "--data-dir", str(data_dir), "--limit", "2000", "--epochs", "3",
            "--out", str(out), "--quiet", "--json", "--optimizer", "adam", "--lr", "0.01",
            "--num-words", "2000"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, _last_json(buf.getvalue())


def test_train_predict_evaluate(trained, capsys):
    out, res = trained
    assert set(res) >= {"test_accuracy", "best_val_accuracy", "epochs", "train_seconds",
                        "model_dir"}
    assert 0 < res["epochs"] <= 3 and 0.0 <= res["test_accuracy"] <= 1.0
    for name in ("weights.safetensors", "config.json", "text.json", "history.json",
                 "history.png"):
        assert (out / name).is_file(), name

    assert main(["predict", str(out), "a wonderful film", "dull and awful", "--json"]) == 0
    preds = _json_lines(capsys.readouterr().out)
    assert len(preds) == 2
    assert all(p["label"] in ("positive", "negative") and 0.5 <= p["probability"] <= 1
               for p in preds)

    assert main(["summary", str(out)]) == 0
    assert "Total" in capsys.readouterr().out


def test_predict_reads_file_and_stdin(trained, tmp_path, capsys):
    out, _ = trained
    f = tmp_path / "reviews.txt"
    f.write_text("great movie\n\nterrible movie\n", encoding="utf-8")
    assert main(["predict", str(out), "--file", str(f), "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [r["index"] for r in rows] == [0, 1, 2] and rows[1]["label"] is None  # blank kept
    r = subprocess.run([sys.executable, "-m", "rnnkit", "predict", str(out), "--json"],
                       input=b"fine film\n", capture_output=True)
    assert r.returncode == 0, r.stderr
    assert len(_json_lines(r.stdout.decode())) == 1


def test_summary_of_seed_specs(capsys):
    assert main(["summary", "--encoding", "onehot"]) == 0
    text = capsys.readouterr().out
    assert "4,072" in text and "4,081" in text
    assert main(["summary"]) == 0
    text = capsys.readouterr().out
    assert "8,000" in text and "200" in text and "8,209" in text


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnkit", *args], capture_output=True,
                          input=stdin)


def _assert_user_error(r: subprocess.CompletedProcess, needle: str) -> None:
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_user_mistakes_get_one_line_and_exit_2(trained, tmp_path):
    out, _ = trained
    _assert_user_error(_run("predict", str(tmp_path / "nope"), "x"), "not found")
    _assert_user_error(_run("predict", str(out), "--file", str(tmp_path / "missing.txt")),
                       "file not found")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 terrible".encode("latin-1"))
    _assert_user_error(_run("predict", str(out), "--file", str(bad)), "not UTF-8")
    _assert_user_error(_run("predict", str(out), "   "), "empty")

    no_vocab = tmp_path / "novocab"
    no_vocab.mkdir()
    for name in ("config.json", "weights.safetensors"):
        (no_vocab / name).write_bytes((out / name).read_bytes())
    _assert_user_error(_run("predict", str(no_vocab), "good"), "vocabulary")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.json", "text.json"):
        (corrupt / name).write_bytes((out / name).read_bytes())
    w = (out / "weights.safetensors").read_bytes()
    (corrupt / "weights.safetensors").write_bytes(w[: len(w) // 2])
    _assert_user_error(_run("predict", str(corrupt), "good"), "weights")


def test_flag_mistakes(tmp_path):
    _assert_user_error(_run("summary", "--units", "0"), "units")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("lr = [", encoding="utf-8")
    _assert_user_error(_run("train", "imdb", "--config", str(cfg)), "TOML")
    _assert_user_error(_run("train", "imdb", "--data-dir", str(tmp_path), "--epochs", "0"),
                       "epochs")


def test_config_file_sets_defaults(tmp_path, monkeypatch):
    from rnnkit.cli import build_parser
    from rnnkit.cli.common import apply_config_file

    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nlr = 0.005\nbatch-size = 32\ncell = "gru"\n', encoding="utf-8")
    argv = ["train", "imdb", "--config", str(cfg), "--batch-size", "16"]
    parser = build_parser()
    apply_config_file(parser, argv)
    args = parser.parse_args(argv)
    assert (args.lr, args.batch_size, args.cell) == (0.005, 16, "gru")
    assert Path(cfg).exists()
