"""Sequence tagging example: a BiLSTM named-entity tagger on a CoNLL-2003-style file.

    python examples/tagging.py [FILE] [--format conll|conllu] [--epochs N]

Default data: tests/fixtures/tiny_ner.conll (120 sentences; the last 30, used as the test
set, contain names and places never seen in training). Prints token accuracy and
entity-level precision/recall/F1 beside the per-word most-frequent-tag baseline, then tags
a new sentence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rnnkit.tasks.tagging import Tagger, TaggerSpec, read_tagged

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=str(ROOT / "tests/fixtures/tiny_ner.conll"))
    ap.add_argument("--format", default="auto")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--test-share", type=float, default=0.25)
    ap.add_argument("--char-filters", type=int, default=0,
                    help="character CNN filters (0: words only)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    sents = read_tagged(args.file, args.format)
    n_test = max(1, int(len(sents) * args.test_share))
    train, test = sents[:-n_test], sents[-n_test:]
    torch.manual_seed(0)
    # words only, as on this tiny generated set (90 sentences) the character CNN that helps
    # on real treebanks overfits (docs/results.md has both)
    tagger = Tagger.create(TaggerSpec(cell="lstm", bidirectional=True, embed_dim=32,
                                      units=32, char_filters=args.char_filters), train)
    tagger.fit(train, test, epochs=args.epochs, lr=1e-2, batch_size=16, seed=0,
               unk_singletons=0.5)
    r = tagger.evaluate(test)
    print(f"{len(train)} train / {len(test)} test sentences, {len(tagger.tags) - 1} tags")
    print(f"token accuracy {r['token_accuracy']:.4f} (most frequent tag per word "
          f"{r['baseline_word_majority_accuracy']:.4f}, overall most frequent tag "
          f"{r['baseline_majority_tag_accuracy']:.4f})")
    if "entity" in r:
        e = r["entity"]
        print(f"entities: precision {e['precision']:.4f} recall {e['recall']:.4f} "
              f"F1 {e['f1']:.4f} (baseline F1 {r['baseline_word_majority_entity_f1']:.4f})")
    sentence = "Greta Weber flew to Nairobi on Friday ."
    print(" ".join(f"{w}/{t}" for w, t in tagger.tag(sentence)))


if __name__ == "__main__":
    main()
