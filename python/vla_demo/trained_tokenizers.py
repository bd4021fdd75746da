"""Small Hugging Face tokenizers trained here on the generator's instructions (no hub can
be reached), for the tests that compare the node's `tokenizer.json` reading with Python's
`tokenizers`: a byte-level BPE and a Unigram model with a Metaspace pre-tokenizer, each
with special tokens added by its post-processor."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from vla_demo import scene as sc


def corpus() -> list[str]:
    """Every instruction the generator writes, English and Chinese."""
    return [sc.instruction_text(c, s, v, lang) for c in sc.COLOURS for s in sc.SHAPES for v in sc.VERBS for lang in ("en", "zh")]


def byte_level_bpe(vocab_size: int = 400, max_token_length: int | None = None) -> Tokenizer:
    """Byte-level BPE, lowercased, `<s>` first. A short `max_token_length` splits words
    into pieces (a token may then end inside a character's UTF-8 bytes)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, max_token_length=max_token_length,
                                  special_tokens=["<pad>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def unigram(vocab_size: int = 300, max_piece_length: int | None = None) -> Tokenizer:
    """Unigram with a Metaspace pre-tokenizer, `</s>` last. A short `max_piece_length`
    splits Chinese phrases into pieces such as 红色 and 圆柱体."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    short = {} if max_piece_length is None else {"max_piece_length": max_piece_length}
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, unk_token="<unk>",
                                      special_tokens=["<pad>", "<unk>", "<s>", "</s>"], **short)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok
