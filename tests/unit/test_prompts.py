"""Prompt building: exact lengths, real template renderings, seeds, random ids."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from deploybench.engines import prompts
from deploybench.engines.prompts import Prompt, PromptLengthError, build_prompt, generation_prompt_suffix, random_prompt
from tests.fixtures.tokenizers import (
    TOKENIZER_KINDS,
    make_cross_word_tokenizer,
    make_tokenizer,
    save_tokenizer,
)

CHAT_KINDS = ("system_chat", "plain_chat")
MODES = {
    "system_chat": "chat_template",
    "plain_chat": "chat_template",
    "no_template": "raw_text",
}
MAX_SWEEP = 300
SENTINEL = "\x00FILLER\x00"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Each kind saved and loaded back through AutoTokenizer, the path real runs take."""
    return {
        kind: AutoTokenizer.from_pretrained(save_tokenizer(kind, tmp_path_factory.mktemp(kind)))
        for kind in TOKENIZER_KINDS
    }


def _user(content):
    return [{"role": "user", "content": content}]


def _minimum(tok) -> int:
    if tok.chat_template is None:
        return len(tok("")["input_ids"])
    return len(tok.apply_chat_template(_user(""), add_generation_prompt=True, return_dict=False))


def _assert_real_rendering(tok, ids):
    """Recover the filler from the ids and check the ids are exactly its rendering."""
    if tok.chat_template is None:
        text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert tok(text)["input_ids"] == ids
        return
    text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    layout = tok.apply_chat_template(_user(SENTINEL), add_generation_prompt=True, tokenize=False)
    prefix, suffix = layout.split(SENTINEL)
    assert text.startswith(prefix) and text.endswith(suffix)
    filler = text[len(prefix) : len(text) - len(suffix)]
    rendered = tok.apply_chat_template(_user(filler), add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(rendered) == ids


def _check(tok, kind, prompt, n):
    assert isinstance(prompt, Prompt)
    assert len(prompt.input_ids) == prompt.context_tokens_measured == n
    assert prompt.prompt_mode == MODES[kind]
    suffix = generation_prompt_suffix(tok)
    assert prompt.input_ids[len(prompt.input_ids) - len(suffix) :] == suffix
    if kind == "no_template":
        assert prompt.input_ids[0] == tok.bos_token_id
    _assert_real_rendering(tok, prompt.input_ids)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_every_length_from_minimum(loaded, kind):
    tok = loaded[kind]
    minimum = _minimum(tok)
    assert minimum < 60
    for n in range(max(minimum, 1), MAX_SWEEP + 1):
        _check(tok, kind, build_prompt(tok, n, seed=n), n)


@pytest.mark.parametrize("n", [1024, 2048, 4096])
@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_large_lengths_are_exact_in_a_few_encodes(loaded, kind, n, monkeypatch):
    # The design: a gallop and a binary search over the word count, about ten encodes whatever the
    # length (counted, not timed: a busy host would make a time bound fail for no fault of the code).
    tok, encodes = loaded[kind], []
    for name in ("_encode_raw", "_render_chat"):
        real = getattr(prompts, name)
        monkeypatch.setattr(prompts, name, lambda *a, real=real, **k: encodes.append(1) or real(*a, **k))
    prompt = build_prompt(tok, n, seed=7)
    assert 0 < len(encodes) <= 30
    _check(tok, kind, prompt, n)


def test_generation_prompt_suffix(loaded):
    def suffix_text(kind):
        return loaded[kind].decode(generation_prompt_suffix(loaded[kind]))

    assert suffix_text("system_chat") == "<|start|>assistant"
    assert suffix_text("plain_chat") == "<|im_start|>assistant\n"
    assert generation_prompt_suffix(loaded["no_template"]) == []


def test_system_block_is_kept(loaded):
    tok = loaded["system_chat"]
    text = tok.decode(build_prompt(tok, 100).input_ids)
    assert text.startswith("<|start|>system<|message|>You are a helpful assistant.")


@pytest.mark.parametrize("kind", CHAT_KINDS)
def test_below_minimum_raises(loaded, kind):
    tok = loaded[kind]
    minimum = _minimum(tok)
    assert build_prompt(tok, minimum).context_tokens_measured == minimum
    with pytest.raises(PromptLengthError, match="context_tokens") as err:
        build_prompt(tok, minimum - 1)
    assert str(minimum) in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "64", True, None])
def test_context_tokens_validated(loaded, bad):
    with pytest.raises(ValueError, match="context_tokens"):
        build_prompt(loaded["plain_chat"], bad)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_seeded_filler(loaded, kind):
    tok = loaded[kind]
    assert build_prompt(tok, 200, seed=1) == build_prompt(tok, 200, seed=1)
    assert build_prompt(tok, 200, seed=1).input_ids != build_prompt(tok, 200, seed=2).input_ids


def test_in_memory_tokenizer_matches_loaded(loaded):
    # Fixtures survive save/load unchanged, so either can be used in tests.
    for kind in TOKENIZER_KINDS:
        fresh = make_tokenizer(kind)
        assert len(fresh) == len(loaded[kind]) <= 1024
        assert build_prompt(fresh, 128) == build_prompt(loaded[kind], 128)


def test_cross_word_merges():
    # Merges span spaces here, so token count is not additive in words; every length
    # must still be hit exactly.
    tok = make_cross_word_tokenizer()
    assert any("Ġ" in t[1:] for t in tok.tokenize("the quick brown fox jumps over the lazy dog"))
    for n in range(1, 200):
        prompt = build_prompt(tok, n, seed=n)
        assert prompt.context_tokens_measured == len(prompt.input_ids) == n
        _assert_real_rendering(tok, prompt.input_ids)


def test_random_prompt():
    prompt = random_prompt(1024, 500, seed=3, exclude_ids=[0, 1, 2, 5000])
    assert prompt.prompt_mode == "random_ids"
    assert len(prompt.input_ids) == prompt.context_tokens_measured == 500
    assert all(3 <= i < 1024 for i in prompt.input_ids)
    assert prompt == random_prompt(1024, 500, seed=3, exclude_ids=[0, 1, 2, 5000])
    assert prompt.input_ids != random_prompt(1024, 500, seed=4, exclude_ids=[0, 1, 2]).input_ids
    # Only one id left: every position is it.
    assert random_prompt(4, 10, exclude_ids=range(3)).input_ids == [3] * 10


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"vocab_size": 0, "context_tokens": 8}, "vocab_size"),
        ({"vocab_size": 2.5, "context_tokens": 8}, "vocab_size"),
        ({"vocab_size": 16, "context_tokens": 0}, "context_tokens"),
        ({"vocab_size": 16, "context_tokens": "8"}, "context_tokens"),
        ({"vocab_size": 2, "context_tokens": 8, "exclude_ids": [0, 1]}, "exclude_ids"),
    ],
)
def test_random_prompt_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        random_prompt(**kwargs)
