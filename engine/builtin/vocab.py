"""The built-in tokenizer: a byte-level BPE trained with ``tokenizers`` on the shipped corpus.

Training is deterministic: the corpus is fixed text read in sorted file order, the byte
alphabet is sorted, and BPE breaks count ties by token id; a test pins the resulting file
digest and checks it in a fresh process. Special tokens (:data:`SPECIAL_TOKENS`) get ids
``0..5``; encoding with special tokens prepends ``<|bos|>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from asymcache.engine.builtin.spec import SPECIAL_TOKENS, BuiltinSpec

CORPUS_PACKAGE = "asymcache.engine.builtin.corpus"


def corpus_paragraphs() -> Iterator[str]:
    """Paragraphs of every ``*.txt`` file of the corpus package, files in sorted name order."""
    files = sorted(
        (f for f in resources.files(CORPUS_PACKAGE).iterdir() if f.name.endswith(".txt")),
        key=lambda f: f.name,
    )
    if not files:
        raise FileNotFoundError(f"the package {CORPUS_PACKAGE} holds no corpus text")
    for f in files:
        for paragraph in f.read_text(encoding="utf-8").split("\n\n"):
            if paragraph.strip():
                yield paragraph.strip() + "\n"


def train_tokenizer(spec: BuiltinSpec) -> tokenizers.Tokenizer:
    """Train the byte-level BPE to exactly ``spec.vocab_size`` ids (special tokens included)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_paragraphs(), trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=True)
    if got != spec.vocab_size:
        raise RuntimeError(
            f"the corpus yields {got} tokens, the spec wants {spec.vocab_size}: add corpus text")
    bos = SPECIAL_TOKENS[spec.bos_token_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, spec.bos_token_id)])
    return tok
