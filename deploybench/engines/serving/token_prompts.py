"""Token-id prompts of exactly `context` tokens, distinct per request, so no prefix cache helps.

Request i's prompt is a function of (seed, i) alone, so a run of any length (a closed loop that runs
for a duration) draws them lazily and a rerun sends the same ones. Its first two tokens spell i in
base A (A = the number of allowed ids, a seeded offset per position): the first cache block of any
two prompts differs for i < A^2 (A^1 at context 1), and a prefix cache, which matches whole blocks
from the start, finds nothing. The rest are seeded uniform draws from the allowed ids. Special ids
(BOS, EOS, padding, chat markers) are never drawn.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class TokenPrompts:
    """`prompts[i]`: request i's prompt, a list of `context` token ids from [0, vocab_size) minus `special_ids`."""

    def __init__(self, context: int, vocab_size: int, special_ids: Iterable[int] = (), seed: int = 0):
        if context < 1:
            raise ValueError(f"context must be at least 1 token, got {context}")
        special = {int(t) for t in special_ids}
        self.allowed = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), np.fromiter(special, dtype=np.int64))
        if len(self.allowed) < 2:
            raise ValueError(f"vocab_size {vocab_size} less {len(special)} special ids leaves fewer than 2 ids")
        self.context, self.seed = context, seed
        offsets = np.random.default_rng([seed, 0]).integers(0, len(self.allowed), size=2)
        self._offsets = [int(o) for o in offsets]

    @property
    def capacity(self) -> int:
        """How many distinct prompts there are (indices 0 .. capacity - 1)."""
        return len(self.allowed) ** min(self.context, 2)

    def __getitem__(self, index: int) -> list[int]:
        if not 0 <= index < self.capacity:
            raise IndexError(f"prompt {index}: only {self.capacity} distinct prompts of {self.context} tokens")
        a = len(self.allowed)
        head = [(index + self._offsets[0]) % a, (index // a + self._offsets[1]) % a][: self.context]
        rest = np.random.default_rng([self.seed, 1, index]).integers(0, a, size=self.context - len(head))
        return self.allowed[np.concatenate([np.asarray(head, dtype=np.int64), rest])].tolist()  # Python ints
