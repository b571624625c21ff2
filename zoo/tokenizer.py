"""Character-level tokenizer for the zoo: one token per character.

Vocabulary: <pad>, <eos>, <unk>, printable ASCII, newline, hiragana, katakana and a few Japanese
punctuation marks (~280 tokens). Built as a `PreTrainedTokenizerFast` over a WordLevel vocabulary
with a one-character split, so `AutoTokenizer.from_pretrained(dir)` loads it without this project.

    from zoo.tokenizer import build_tokenizer
    tok = build_tokenizer()          # left padding, for batched generation
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
_JA_PUNCT = "。、「」？！・ー"


def vocabulary() -> list[str]:
    chars = [chr(c) for c in range(0x20, 0x7F)] + ["\n"]
    chars += [chr(c) for c in range(0x3041, 0x3097)]  # hiragana
    chars += [chr(c) for c in range(0x30A1, 0x30FB)]  # katakana
    chars += [c for c in _JA_PUNCT if c not in chars]
    return [PAD, EOS, UNK] + chars


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # every character is its own piece ([\s\S] also matches the newline)
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
