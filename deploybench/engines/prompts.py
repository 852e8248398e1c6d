"""Build prompts of an exact token length.

``build_prompt`` renders a seeded, natural-ish filler text through the model's chat
template (or tokenises it raw when there is none) and sizes the filler so that the
*final* token count equals ``context_tokens``. The returned ids are always a real,
untruncated rendering, so the assistant header the template appends is kept intact.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from deploybench.enums import PromptMode

# Common English words: the filler reads like (meaningless) prose, which keeps token
# statistics closer to real prompts than random ids or a single repeated word.
_WORD_TEXT = (
    "the of and to in is was that for it with as his on be at by this had not are but "
    "from or have an they which one you were her all she there would their we him been "
    "has when who will more no if out so said what up its about into than them can only "
    "other new some could time these two may then do first any my now such like our over "
    "man me even most made after also did many before must through back years where much "
    "your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against "
    "go came right used take three states himself few house use during without again place "
    "around however home small found thought went say part once general high upon school "
    "every does got united left number course war until always away something fact though "
    "water less public put think almost hand enough far took head yet government system "
    "better set told nothing night end why called did eyes find going look asked later "
    "point knew city next program business give group toward young days let room president "
    "side social present given several order national possible rather second face per among "
    "form important often things looked early white case john become large big need four "
    "within felt children along saw best church ever least power development light"
)
_WORDS = tuple(_WORD_TEXT.split())

# Short pieces used to close the last few tokens of the gap; each is one token in most
# vocabularies. Tried in order, the first that adds tokens without overshooting wins.
_FILL_PIECES = (" the", " a", " and", " of", ",", " to", ".", " I", " x", " 1", "!")

# How many trailing words the fine-tune may give back before giving up (see _fit).
_MAX_BACKOFF = 16


@dataclass(frozen=True)
class Prompt:
    input_ids: list[int]  # exactly the tokens fed to the model
    prompt_mode: PromptMode
    context_tokens_measured: int  # len(input_ids)


class PromptLengthError(ValueError):
    """The requested ``context_tokens`` cannot be reached with this tokenizer."""


def _check_positive_int(name: str, value) -> int:
    # bool is an int subclass but never a meaningful length.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _filler_words(seed: int) -> Iterator[str]:
    """Endless seeded stream of words grouped into capitalised sentences."""
    rng = random.Random(seed)
    while True:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        yield from sentence


def _as_id_list(result) -> list[int]:
    """Normalise what ``apply_chat_template``/``__call__`` return to a flat list of ints."""
    if isinstance(result, Mapping) or hasattr(result, "input_ids"):
        result = result["input_ids"]
    if hasattr(result, "tolist"):  # tensors / arrays
        result = result.tolist()
    if result and isinstance(result[0], list):  # batch of one
        (result,) = result
    return [int(i) for i in result]


def _render_chat(tokenizer, content: str, add_generation_prompt: bool = True) -> list[int]:
    messages = [{"role": "user", "content": content}]
    kwargs = {"add_generation_prompt": add_generation_prompt, "tokenize": True}
    try:
        result = tokenizer.apply_chat_template(messages, return_dict=False, **kwargs)
    except TypeError:  # older transformers without return_dict
        result = tokenizer.apply_chat_template(messages, **kwargs)
    return _as_id_list(result)


def _encode_raw(tokenizer, text: str) -> list[int]:
    # Normal special tokens (e.g. BOS) included, exactly as a base model would be fed.
    return _as_id_list(tokenizer(text, add_special_tokens=True))


def generation_prompt_suffix(tokenizer) -> list[int]:
    """Token ids the chat template appends after the user turn (the assistant header);
    ``[]`` for a tokenizer without a chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        return []
    with_gen = _render_chat(tokenizer, "", add_generation_prompt=True)
    without = _render_chat(tokenizer, "", add_generation_prompt=False)
    common = 0
    for a, b in zip(with_gen, without):
        if a != b:
            break
        common += 1
    return with_gen[common:]


def _fit(encode, words: Iterator[str], target: int) -> list[int] | None:
    """Ids of ``encode(filler)`` with exactly ``target`` tokens, or None if not found.

    Find k with len(k words) <= target < len(k+1 words): estimate k from the measured
    tokens per word, gallop to bracket it, then binary search. The invariant holds even
    when the count is not monotone in k (merges across word boundaries); it only needs
    the lower end to fit and the upper end to overshoot. The gap left (less than one
    word) is closed with short pieces. About ten encodes whatever the length.
    """
    pool: list[str] = []
    cache: dict[int, list[int]] = {}

    def text(k: int) -> str:
        while len(pool) < k:
            pool.append(next(words))
        return " ".join(pool[:k])

    def length(k: int) -> int:
        if k not in cache:
            cache[k] = encode(text(k))
        return len(cache[k])

    minimum = length(0)  # the caller checked minimum <= target

    # Estimate k twice: from a guess of ~1.5 tokens per word, then from the rate measured.
    k = max(1, round((target - minimum) / 1.5))
    rate = max(length(k) - minimum, 1) / k
    k = max(0, round((target - minimum) / rate))

    # Gallop outward from the estimate until [lo, hi] brackets the crossing.
    step = 2
    if length(k) <= target:
        lo, hi = k, k + step
        while length(hi) <= target:
            lo, hi, step = hi, hi + 2 * step, 2 * step
    else:
        lo, hi = max(0, k - step), k
        while length(lo) > target:  # ends by lo == 0, which always fits
            lo, hi, step = max(0, lo - 2 * step), lo, 2 * step

    while hi - lo > 1:
        mid = (lo + hi) // 2
        if length(mid) <= target:
            lo = mid
        else:
            hi = mid

    # Fine-tune. If no piece fits after k words (odd merges), give words back and retry.
    for k in range(lo, max(-1, lo - _MAX_BACKOFF), -1):
        length(k)  # fills the cache
        base, ids = text(k), cache[k]
        while len(ids) < target:
            for piece in _FILL_PIECES:
                candidate = base + piece if base else piece.lstrip()
                cand_ids = encode(candidate)
                if len(ids) < len(cand_ids) <= target:
                    base, ids = candidate, cand_ids
                    break
            else:
                break  # stuck at this k
        if len(ids) == target:
            return ids
    return None


def build_prompt(tokenizer, context_tokens: int, seed: int = 0) -> Prompt:
    """Prompt of exactly ``context_tokens`` tokens, filler text seeded by ``seed``.

    With a chat template the filler is the single user message and the returned ids are
    ``apply_chat_template(..., add_generation_prompt=True)`` of it, so they end with the
    assistant header. Without one the filler is tokenised with the normal special tokens.
    Raises ``PromptLengthError`` when ``context_tokens`` is below the minimum possible.
    """
    context_tokens = _check_positive_int("context_tokens", context_tokens)
    if getattr(tokenizer, "chat_template", None) is not None:
        mode = PromptMode.CHAT_TEMPLATE

        def encode(content: str) -> list[int]:
            return _render_chat(tokenizer, content)
    else:
        mode = PromptMode.RAW_TEXT

        def encode(content: str) -> list[int]:
            return _encode_raw(tokenizer, content)

    minimum = len(encode(""))
    if context_tokens < minimum:
        raise PromptLengthError(
            f"context_tokens={context_tokens} is below the minimum prompt length "
            f"{minimum} for this tokenizer ({mode} overhead with an empty filler)"
        )
    ids = _fit(encode, _filler_words(seed), context_tokens)
    if ids is None:
        raise PromptLengthError(
            f"could not build a prompt of exactly context_tokens={context_tokens} tokens "
            f"with this tokenizer (minimum {minimum})"
        )
    return Prompt(input_ids=ids, prompt_mode=mode, context_tokens_measured=len(ids))


def random_prompt(vocab_size: int, context_tokens: int, seed: int = 0, exclude_ids: Iterable[int] = ()) -> Prompt:
    """``context_tokens`` seeded random ids in ``[0, vocab_size)``, none in ``exclude_ids``
    (callers pass special ids such as eos/pad so generation is not cut short)."""
    vocab_size = _check_positive_int("vocab_size", vocab_size)
    context_tokens = _check_positive_int("context_tokens", context_tokens)
    excluded = {int(i) for i in exclude_ids if 0 <= int(i) < vocab_size}
    if len(excluded) >= vocab_size:
        raise ValueError(f"exclude_ids excludes every id of vocab_size={vocab_size}")
    rng = random.Random(seed)
    # Rejection sampling: exact uniform over allowed ids, and cheap since few are excluded.
    ids: list[int] = []
    while len(ids) < context_tokens:
        i = rng.randrange(vocab_size)
        if i not in excluded:
            ids.append(i)
    return Prompt(input_ids=ids, prompt_mode=PromptMode.RANDOM_IDS, context_tokens_measured=len(ids))


# ---------------------------------------------------------------- batch B: B distinct prompts

# How many further seeds a row may try before the batch is declared impossible (see _distinct_batch).
_MAX_RESEEDS = 64


@dataclass(frozen=True)
class PromptBatch:
    """The B prompts of a batch-B cell: each exactly the same length, pairwise different id sequences."""

    prompts: tuple[Prompt, ...]
    seeds: tuple[int, ...]  # the seed each row was built from (seed + b unless that row had to be re-seeded)

    @property
    def batch(self) -> int:
        return len(self.prompts)

    @property
    def input_ids(self) -> list[list[int]]:
        return [p.input_ids for p in self.prompts]

    @property
    def prompt_mode(self) -> PromptMode:
        return self.prompts[0].prompt_mode

    @property
    def context_tokens_measured(self) -> int:
        """The length every row has (builders check they agree; a cell compares it with its context)."""
        (length,) = {p.context_tokens_measured for p in self.prompts}
        return length


def _distinct_batch(make, batch: int, seed: int, what: str) -> PromptBatch:
    """Row b is make(seed + b); a row equal to an earlier one is rebuilt from seed + b + batch, then
    seed + b + 2 x batch, ... (a seed no other row uses), up to _MAX_RESEEDS times. Row 0 is the
    batch-1 prompt of `seed`."""
    batch = _check_positive_int("batch", batch)
    rows: list[Prompt] = []
    seeds: list[int] = []
    seen: set[tuple[int, ...]] = set()
    for b in range(batch):
        for attempt in range(_MAX_RESEEDS + 1):
            row_seed = seed + b + attempt * batch
            prompt = make(row_seed)
            if tuple(prompt.input_ids) not in seen:
                break
        else:
            raise PromptLengthError(
                f"could not build {batch} distinct {what}: row {b} repeated an earlier row for "
                f"{_MAX_RESEEDS + 1} seeds (too few distinct prompts of this length)"
            )
        seen.add(tuple(prompt.input_ids))
        rows.append(prompt)
        seeds.append(row_seed)
    return PromptBatch(tuple(rows), tuple(seeds))


def build_prompts(tokenizer, context_tokens: int, batch: int, seed: int = 0) -> PromptBatch:
    """`batch` pairwise distinct prompts of exactly ``context_tokens`` tokens each, as build_prompt
    renders them (chat template, or raw text), row b's filler seeded by seed + b."""
    return _distinct_batch(
        lambda s: build_prompt(tokenizer, context_tokens, seed=s), batch, seed, f"prompts of {context_tokens} tokens"
    )


def random_prompts(
    vocab_size: int, context_tokens: int, batch: int, seed: int = 0, exclude_ids: Iterable[int] = ()
) -> PromptBatch:
    """`batch` pairwise distinct random_prompt rows, row b seeded by seed + b, none with an id in ``exclude_ids``."""
    vocab_size = _check_positive_int("vocab_size", vocab_size)
    context_tokens = _check_positive_int("context_tokens", context_tokens)
    batch = _check_positive_int("batch", batch)
    excluded = list(exclude_ids)
    allowed = vocab_size - len({int(i) for i in excluded if 0 <= int(i) < vocab_size})
    if allowed >= 1 and allowed ** min(context_tokens, 64) < batch:  # 2**64 rows: never asked for
        raise PromptLengthError(
            f"only {allowed}^{context_tokens} distinct prompts of {context_tokens} ids exist, fewer than batch {batch}"
        )
    return _distinct_batch(
        lambda s: random_prompt(vocab_size, context_tokens, seed=s, exclude_ids=excluded),
        batch,
        seed,
        f"random prompts of {context_tokens} ids",
    )


def special_token_ids(config) -> list[int]:
    """eos, pad and bos ids of a model config (each an int or a list): what random prompts exclude."""
    special = [getattr(config, k, None) for k in ("eos_token_id", "pad_token_id", "bos_token_id")]
    return [i for s in special for i in (s if isinstance(s, list) else [s]) if isinstance(i, int)]
