"""A solution to the exercise of nbs/00_tokenizer.ipynb: a character tokenizer with byte fallback."""
from typing import Iterable

from gptlite.tokenizer import CharTokenizer


class ByteFallbackTokenizer(CharTokenizer):
    "A character tokenizer that spells characters it does not know as their UTF-8 bytes, so any text round-trips."
    @property
    def vocab_size(self) -> int:
        return len(self.itos) + 256            # ids 0..n-1: the characters; ids n..n+255: the byte values

    def encode(self, text: str) -> list[int]:
        n, ids = len(self.itos), []
        for c in text:
            if c in self.stoi: ids.append(self.stoi[c])                 # a known character: one id
            else: ids.extend(n + b for b in c.encode("utf-8"))         # any other: 1 to 4 byte ids, shifted past the characters
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        n, ids = len(self.itos), list(ids)
        bad = [i for i in ids if not 0 <= i < n + 256]
        if bad: raise ValueError(f"id {bad[0]} is outside the vocabulary (0..{n + 255})")
        # Turn every id into bytes (a character into its UTF-8 bytes, a byte id into that byte), join them, and decode
        # once: the bytes of one character may arrive as several ids, so they cannot be decoded one id at a time.
        # errors="replace" keeps decode total: ids cut in the middle of a character come out as "\ufffd".
        return b"".join(self.itos[i].encode("utf-8") if i < n else bytes([i - n]) for i in ids).decode("utf-8", errors="replace")
