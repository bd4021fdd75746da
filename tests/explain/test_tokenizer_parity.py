"""The node reads a Hugging Face `tokenizer.json` exactly as Python's `tokenizers` does:
two tokenizers trained here on the generator's instructions (byte-level BPE, and a
Unigram model with a Metaspace pre-tokenizer, each with special tokens added by its
post-processor), 1,000 strings each (English, Chinese, mixed, emoji, runs of
whitespace, over-long), ids compared through `vla_controller tokenize`."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from vla_demo import scene as sc
from vla_demo.trained_tokenizers import byte_level_bpe, corpus, unigram
from vla_demo.node_process import BIN, ROOT

MAX_LENGTH = 24


def strings(n: int, seed: int) -> list[str]:
    """English, Chinese, both mixed, with emoji, whitespace runs and over-long ones."""
    rng = np.random.default_rng(seed)
    base = corpus()
    extras = ["🙂", "🤖👍", "  ", "\t", "\n", "ﬁne", "ＡＢＣ", "é", "e\u0301", "😀 red", "🟥", "ß", "İ", "", "托盘", "！？"]
    out = []
    for k in range(n):
        words = " ".join(rng.choice(base, size=int(rng.integers(1, 4)))).split(" ")
        for _ in range(int(rng.integers(0, 4))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(extras)))
        sep = [" ", "  ", " \t ", ""][k % 4]
        s = sep.join(words)
        if k % 10 == 0:
            s = s * 4  # beyond MAX_LENGTH tokens
        out.append(s)
    return out


@pytest.mark.parametrize("make", [byte_level_bpe, unigram])
def test_the_node_tokenizes_as_python_tokenizers(tmp_path, make):
    tok = make()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    texts = strings(1000, seed=len(make.__name__))
    r = subprocess.run([str(BIN), "tokenize", "--tokenizer", str(path), "--max-length", str(MAX_LENGTH), "--pad-id", "0"],
                       input="".join(json.dumps(t) + "\n" for t in texts), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    node = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(node) == len(texts)
    tok.enable_truncation(MAX_LENGTH)
    truncated = 0
    for text, n in zip(texts, node):
        e = tok.encode(text)
        real = sum(n["mask"])
        assert n["ids"][:real] == e.ids, repr(text)
        assert n["ids"][real:] == [0] * (MAX_LENGTH - real) and len(n["ids"]) == MAX_LENGTH
        assert n["truncated"] == sum(len(o.ids) for o in e.overflowing), repr(text)
        truncated += n["truncated"] > 0
    assert truncated >= 50, "over-long strings are among the cases"
