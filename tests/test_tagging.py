"""Sequence tagging: CoNLL-U / CoNLL-2003 readers, the masked loss, learning on a small NER
fixture, persistence, and one-line errors naming file and line."""

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.errors import UserError
from rnnkit.tasks.tagging import (
    SequenceTaggerModel,
    Tagger,
    TaggerSpec,
    masked_cross_entropy,
    read_conll,
    read_conllu,
    read_tagged,
    tokenize_sentence,
)

FIX = Path(__file__).parent / "fixtures"


def test_read_conllu_comments_and_multiword_tokens():
    sents = read_tagged(FIX / "tiny.conllu")
    assert len(sents) == 24
    assert sents[0].tokens == ["The", "cat", "sat", "on", "the", "mat", "."]
    assert sents[0].tags == ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    # "cannot" is the range 2-3 over the syntactic words "can" + "not"
    assert sents[3].tokens == ["We", "can", "not", "leave", "now", "."]
    assert sents[3].tags[1:3] == ["AUX", "PART"]
    xpos = read_conllu(FIX / "tiny.conllu", "xpos")
    assert xpos[0].tags[0] == "DT"
    lemma = read_conllu(FIX / "tiny.conllu", 2)
    assert lemma[0].tags[2] == "sit"


def test_read_conll2003():
    sents = read_tagged(FIX / "tiny_ner.conll")
    assert len(sents) == 120
    assert sents[0].tokens[:2] == ["General", "Motors"]
    assert sents[0].tags[:2] == ["B-ORG", "I-ORG"]
    pos = read_conll(FIX / "tiny_ner.conll", tag_column=1)
    assert pos[0].tags[0] == "NNP"


@pytest.mark.parametrize("text,reader,msg", [
    ("1\tThe\tthe\tDET\tDT\t_\t0\tdet\t_\t_\n2\tcat\tcat\tNOUN\n", "conllu",
     r"bad\.conllu:2: expected 10 tab-separated CoNLL-U columns, got 4"),
    ("# c\nx\tThe\tthe\tDET\tDT\t_\t0\tdet\t_\t_\n", "conllu", r"bad\.conllu:2: bad token ID"),
    ("1\tThe\tthe\tDET\tDT\t_\t0\tdet\t_\t_\n3\tcat\tcat\tNOUN\tNN\t_\t0\tdet\t_\t_\n",
     "conllu", r"bad\.conllu:2: token ID 3 out of order"),
    ("1\tThe\tthe\t_\tDT\t_\t0\tdet\t_\t_\n", "conllu", r"bad\.conllu:1: no tag in column UPOS"),
    ("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n", "conll",
     r"bad\.conll:2: expected 4 columns like the first token line, got 3"),
    ("\n\n", "conll", r"bad\.conll: no sentences"),
])
def test_malformed_files_name_file_and_line(tmp_path, text, reader, msg):
    p = tmp_path / f"bad.{reader}"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=msg) as e:
        read_tagged(p, reader)
    assert "\n" not in str(e.value)


def test_missing_and_non_utf8_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_tagged(tmp_path / "nope.conllu")
    p = tmp_path / "latin1.conll"
    p.write_bytes("caf\xe9 NN O\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_tagged(p)
    bom = tmp_path / "bom.conllu"  # saved by a Windows editor: a byte-order mark first
    bom.write_text("# sent_id = 1\n1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n",
                   encoding="utf-8-sig")
    assert read_tagged(bom)[0].tokens == ["Hi"]


def test_tokenize_sentence():
    assert tokenize_sentence("Don't stop, U.S.A. now!") == ["Don't", "stop", ",", "U.S.A",
                                                            ".", "now", "!"]


def test_masked_loss_equals_loss_on_real_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    y = torch.tensor([[1, 2, 0, 0], [3, 4, 1, 0]])
    ref = torch.nn.functional.cross_entropy(
        torch.cat([logits[0, :2], logits[1, :3]]), torch.tensor([1, 2, 3, 4, 1]))
    torch.testing.assert_close(masked_cross_entropy(logits, y), ref)


def test_padding_does_not_change_predictions():
    torch.manual_seed(0)
    m = SequenceTaggerModel(20, 5, embed_dim=6, units=4, cell="gru", bidirectional=True).eval()
    short = torch.tensor([[3, 4, 5]])
    batch = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(m(short)[0], m(batch)[0, :3])


@pytest.fixture(scope="module")
def ner():
    sents = read_tagged(FIX / "tiny_ner.conll")
    return sents[:90], sents[90:]  # the last 30 use names and places unseen in training


@pytest.fixture(scope="module")
def trained(ner):
    train, test = ner
    torch.manual_seed(0)
    tagger = Tagger.create(TaggerSpec(cell="lstm", embed_dim=24, units=24), train)
    hist = tagger.fit(train, test, epochs=8, lr=1e-2, batch_size=16, seed=0)
    return tagger, hist


def test_tagger_learns_and_beats_baselines(trained, ner):
    tagger, hist = trained
    loss = hist.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    res = tagger.evaluate(ner[1])
    assert res["token_accuracy"] > res["baseline_majority_tag_accuracy"] + 0.15
    assert res["token_accuracy"] > res["baseline_word_majority_accuracy"]
    assert tagger.is_bio
    assert res["entity"]["f1"] > 0.6
    assert res["entity"]["f1"] > res["baseline_word_majority_entity_f1"]
    assert set(res["entity_per_type"]) == {"PER", "LOC", "ORG"}


def test_save_load_round_trip(trained, tmp_path):
    tagger, _ = trained
    tagger.save(tmp_path / "m")
    again = Tagger.load(tmp_path / "m")
    sent = "Maria Garcia visited Oslo on Monday ."
    assert again.tag(sent) == tagger.tag(sent)
    assert again.tags == tagger.tags
    with pytest.raises(UserError, match="tags not seen in training"):
        from rnnkit.tasks.tagging import Sentence
        again.evaluate([Sentence(["x"], ["B-MISC"])])


def test_pos_tagger_fits_conllu():
    sents = read_tagged(FIX / "tiny.conllu")
    torch.manual_seed(0)
    tagger = Tagger.create(TaggerSpec(cell="gru", embed_dim=16, units=16, char_filters=0), sents)
    assert not tagger.is_bio
    tagger.fit(sents, epochs=10, lr=2e-2, batch_size=8, seed=0, unk_singletons=0.0)
    res = tagger.evaluate(sents)
    assert res["token_accuracy"] > 0.9 > res["baseline_majority_tag_accuracy"]
    assert "entity" not in res


def test_bad_spec():
    with pytest.raises(UserError, match="cell must be"):
        TaggerSpec(cell="rnn")
    with pytest.raises(UserError, match="units must be a positive integer"):
        TaggerSpec(units=0)


def test_lowercase_defaults_to_the_character_cnn(tmp_path):
    """Words are lowercased for the vocabulary exactly when the character CNN (which sees
    the original casing) is on, unless the spec says otherwise; the resolved choice is what
    the model directory records, and "The"/"the" then share one id."""
    assert TaggerSpec().lowercase is True
    assert TaggerSpec(char_filters=0).lowercase is False
    assert TaggerSpec(lowercase=False).lowercase is False
    with pytest.raises(UserError, match="lowercase must be true or false"):
        TaggerSpec(lowercase="yes")  # type: ignore[arg-type]
    from rnnkit.tasks.tagging import Sentence
    sents = [Sentence(["The", "cat", "sat"], ["DET", "NOUN", "VERB"]),
             Sentence(["the", "dog", "ran"], ["DET", "NOUN", "VERB"])]
    tagger = Tagger.create(TaggerSpec(embed_dim=8, units=8, char_filters=8), sents)
    ids = tagger.encode_tokens([["The", "the", "THE"]])
    assert ids[0, 0] == ids[0, 1] == ids[0, 2] != 2
    tagger.save(tmp_path / "m")
    assert Tagger.load(tmp_path / "m").spec.lowercase is True


def test_character_cnn_tags_unseen_words_by_spelling():
    """With the character CNN, a word never seen in training (id 2) still gets its tag from
    its spelling; the word-only model can only guess from context."""
    from rnnkit.tasks.tagging import Sentence

    words = {"NOUN": ["walking", "talking", "singing", "running", "jumping", "reading"],
             "DET": ["the", "a"], "ADJ": ["quickly", "slowly", "softly", "gladly"]}
    rng = np.random.default_rng(0)
    train = []
    for _ in range(120):  # ADJ and NOUN in the same positions: only the spelling tells
        w = [rng.choice(words["DET"]), rng.choice(words["NOUN"] + words["ADJ"])]
        train.append(Sentence(w, ["DET", "NOUN" if w[1].endswith("ing") else "ADJ"]))
    test = [Sentence(["the", "swimming"], ["DET", "NOUN"]),
            Sentence(["a", "sadly"], ["DET", "ADJ"])]
    torch.manual_seed(0)
    tagger = Tagger.create(TaggerSpec(cell="gru", embed_dim=8, units=8, char_filters=16),
                           train)
    assert tagger.vocab.encode(["swimming", "sadly"], add_start=False) == [2, 2]
    tagger.fit(train, epochs=30, lr=2e-2, batch_size=16, seed=0)
    assert tagger.predict([s.tokens for s in test]) == [s.tags for s in test]


def test_crf_tagger_learns_decodes_by_viterbi_and_round_trips(ner, tmp_path):
    """--crf: trained on the sentence likelihood; predictions are the CRF's Viterbi paths
    (never the padding tag); it tags the held-out NER sentences as well as the softmax
    model's bar; save/load keeps the transitions."""
    train, test = ner
    torch.manual_seed(0)
    tagger = Tagger.create(TaggerSpec(cell="lstm", embed_dim=24, units=24, crf=True), train)
    assert tagger.model.crf is not None
    hist = tagger.fit(train, test, epochs=8, lr=1e-2, batch_size=16, seed=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    res = tagger.evaluate(test)
    assert res["token_accuracy"] > res["baseline_word_majority_accuracy"]
    assert res["entity"]["f1"] > 0.6
    toks = [s.tokens for s in test[:10]]
    x = tagger.inputs(toks)
    with torch.no_grad():
        logits = tagger.model(*x)
    paths = tagger.model.crf.decode(logits, x[0] != 0)
    assert tagger.predict(toks) == [[tagger.tags[k] for k in p] for p in paths]
    assert all(0 not in p for p in paths)
    tagger.save(tmp_path / "crf")
    again = Tagger.load(tmp_path / "crf")
    assert again.predict(toks) == tagger.predict(toks)
    torch.testing.assert_close(again.model.crf.transitions, tagger.model.crf.transitions)
