"""A policy whose metadata names a Hugging Face `tokenizer.json`, loaded by the node and
run through `vla_controller inspect`: the tokenizer as a file beside the policy (byte-level
BPE) and carried inside the policy file by a method (Unigram with a Metaspace
pre-tokenizer), both trained here on the generator's instructions with pieces short
enough that words and Chinese phrases split into subwords. The explanation's token ids
are Python `tokenizers`' ids of the instruction (trimmed, as the node trims it), its
tokens the tokenizer's subword pieces (the text behind each token, as the node shows
them; CJK pieces for a Chinese instruction), and token occlusion puts the weight on the
piece the policy reads."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from vla_demo import contract_policies as cp
from vla_demo import scene as sc
from vla_demo.trained_tokenizers import byte_level_bpe, unigram
from vla_demo.node_process import BIN, ROOT
from vla_demo.png import write_png

MAX_LENGTH = 32


def short_bpe() -> Tokenizer:
    """Tokens of at most 6 byte-level characters: "cylinder" is three pieces, a Chinese
    character one or two (a token may end inside a character's UTF-8 bytes)."""
    return byte_level_bpe(vocab_size=600, max_token_length=6)


def short_unigram() -> Tokenizer:
    """Pieces of at most 3 characters: Chinese phrases such as 红色 and 圆柱体."""
    return unigram(max_piece_length=3)


class CarriedTokenizer(cp.MeanColour):
    """MeanColour with its tokenizer.json inside the file, returned by `tokenizer_json()`."""

    def __init__(self, meta: dict, tokenizer_text: str, **kwargs):
        super().__init__(meta, **kwargs)
        self.tokenizer_text = tokenizer_text

    @torch.jit.export
    def tokenizer_json(self) -> str:
        return self.tokenizer_text


def encode(tok: Tokenizer, text: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """Python's ids of `text`, the text behind each token (the token itself where it
    covers none: the special tokens the post-processor adds), and the offsets."""
    e = tok.encode(text)
    return e.ids, [text[a:b] or t for t, (a, b) in zip(e.tokens, e.offsets)], e.offsets


def is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def make_policy(tmp_path, tok: Tokenizer, carried: bool, word_id: int):
    """The policy file; with `carried` the tokenizer.json is nowhere on disk beside it."""
    folder = tmp_path / ("carried" if carried else "beside")
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"type": "hf", "max_length": MAX_LENGTH, "pad_id": 0}
    meta = cp.metadata([cp.camera("main", 32, 24)], ["a"], patch_grid=(3, 4),
                       tokenizer={**spec, **({"method": "tokenizer_json"} if carried else {"file": "tokenizer.json"})})
    if carried:
        module = CarriedTokenizer(meta, tok.to_str(), word_id=word_id, word_gain=0.05)
    else:
        tok.save(str(folder / "tokenizer.json"))
        module = cp.MeanColour(meta, word_id=word_id, word_gain=0.05)
    return cp.save(module, folder / "policy.pt")


@pytest.mark.parametrize("make, carried", [(short_bpe, False), (short_unigram, True)], ids=["bpe-file", "unigram-method"])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_inspect_shows_the_tokenizers_pieces_and_ids(tmp_path, make, carried, lang):
    tok = make()
    text = sc.instruction_text("red", "cylinder", "pick", lang)
    ids, want_pieces, offsets = encode(tok, text)
    assert len(ids) <= MAX_LENGTH
    # The policy reads one token: the first that covers the colour word.
    colour = {"en": "red", "zh": sc.ZH_COLOURS["red"]}[lang]
    at = text.index(colour)
    k = next(i for i, (a, b) in enumerate(offsets) if a < at + len(colour) and b > at)
    policy = make_policy(tmp_path, tok, carried, word_id=ids[k])
    if carried:
        assert not (policy.parent / "tokenizer.json").exists()
    image = tmp_path / "main.png"
    write_png(image, np.full((24, 32, 3), 90, np.uint8))
    # Surrounding white space: the node trims the instruction before it tokenizes it.
    r = subprocess.run([str(BIN), "inspect", str(image), "--joints", "0", "--instruction", f"  {text}\t\n",
                        "--policy", str(policy), "-o", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    e = json.loads((tmp_path / "out" / "explanation.json").read_text())

    assert e["token_ids"] == ids + [0] * (MAX_LENGTH - len(ids))
    assert tok.encode(f"  {text}\t\n").ids != ids, "the trim is seen: untrimmed, Python's ids differ"
    assert e["tokens"] == want_pieces
    # Subword pieces: neither one per character nor one per word.
    words = [p.strip() for p in e["tokens"] if p.strip() and p not in ("<s>", "</s>")]
    if lang == "en":
        assert any(w not in text.split() and w in text for w in words), e["tokens"]
        assert any(len(w) > 1 for w in words), e["tokens"]
    else:
        cjk = [p for p in words if all(is_cjk(c) for c in p)]
        assert any(len(p) > 1 for p in cjk) and all(p != text for p in cjk), e["tokens"]

    # Token occlusion (the policy returns no token weights): all the weight on the
    # token(s) with the id the policy reads.
    w = np.array(e["token_weights"])
    assert w.shape == (len(ids),) and w.sum() == pytest.approx(1.0, abs=1e-5)
    read = np.array(ids) == ids[k]
    assert w[read].sum() == pytest.approx(1.0, abs=1e-5) and w[~read].max(initial=0.0) < 1e-6
    assert (tmp_path / "out" / "language.png").exists()


def test_a_missing_tokenizer_file_stops_the_load(tmp_path):
    tok = short_unigram()
    policy = make_policy(tmp_path, tok, carried=False, word_id=-1)
    shutil.move(policy.parent / "tokenizer.json", tmp_path / "elsewhere.json")
    write_png(tmp_path / "main.png", np.zeros((24, 32, 3), np.uint8))
    r = subprocess.run([str(BIN), "inspect", str(tmp_path / "main.png"), "--joints", "0", "--instruction", "go",
                        "--policy", str(policy), "-o", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "tokenizer file" in r.stderr, r.stderr


def test_inspect_cuts_an_over_long_instruction_as_python_truncation(tmp_path):
    """`inspect` cuts at max_length as Python's enable_truncation does (special tokens
    kept); the node itself refuses such an instruction on the topic and for a goal."""
    tok = short_unigram()
    text = " ".join([sc.instruction_text("red", "cylinder", "pick", "en")] * 3)
    assert len(tok.encode(text).ids) > MAX_LENGTH
    policy = make_policy(tmp_path, tok, carried=True, word_id=-1)
    write_png(tmp_path / "main.png", np.zeros((24, 32, 3), np.uint8))
    r = subprocess.run([str(BIN), "inspect", str(tmp_path / "main.png"), "--joints", "0", "--instruction", text,
                        "--policy", str(policy), "-o", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    e = json.loads((tmp_path / "out" / "explanation.json").read_text())
    tok.enable_truncation(MAX_LENGTH)
    want = tok.encode(text)
    assert e["token_ids"] == want.ids and want.ids[-1] == tok.token_to_id("</s>")
    assert len(e["tokens"]) == MAX_LENGTH
