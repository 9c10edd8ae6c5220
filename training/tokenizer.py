"""Build a CLIP BPE tokenizer whose vocabulary comes from the caption words.

The vocabulary holds the 256 byte-level symbols (alone and with the "</w>"
end-of-word suffix, so that any text can be tokenized), the special tokens,
and every caption word as a single token, reached through a chain of BPE
merges.  Each caption word therefore becomes exactly one token.
"""

from __future__ import annotations

import json
import os

from .dataset import CAPTION_WORDS

MAX_LENGTH = 16  # "<bos> an orange triangle on a yellow background <eos>" is 9


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build_vocab(words=CAPTION_WORDS) -> tuple[dict[str, int], list[str]]:
    symbols = list(bytes_to_unicode().values())
    vocab_list: list[str] = []
    vocab_list += symbols
    vocab_list += [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in sorted(words):
        # Left-to-right merge chain: ((r e) d</w>) ...
        parts = [*word[:-1], word[-1] + "</w>"]
        cur = parts[0]
        for nxt in parts[1:]:
            merge = f"{cur} {nxt}"
            cur = cur + nxt
            if merge not in merges:
                merges.append(merge)
            if cur not in vocab_list:
                vocab_list.append(cur)
        if len(parts) == 1 and cur not in vocab_list:
            vocab_list.append(cur)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return vocab, merges


def write_tokenizer_files(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    vocab, merges = build_vocab()
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(merges) + "\n")
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def build_tokenizer(folder: str):
    """Write the vocabulary files into `folder` and load them with CLIPTokenizer."""
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    tok.model_max_length = MAX_LENGTH
    return tok


def tokenize(tok, captions: list[str]):
    """Tokenize exactly as StableDiffusionPipeline.encode_prompt does."""
    return tok(
        captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
