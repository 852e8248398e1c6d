"""Prompts at batch B: B pairwise distinct prompts, each exactly `context` tokens, seeded by seed + b."""

from __future__ import annotations

import itertools

import pytest

from deploybench.engines.models import load_card
from deploybench.engines.prompts import (
    PromptLengthError,
    build_prompt,
    build_prompts,
    random_prompt,
    random_prompts,
    special_token_ids,
)
from tests.fixtures.tokenizers import TOKENIZER_KINDS
from tests.unit.test_prompts import _check, _minimum, loaded  # noqa: F401 (loaded is a fixture)


def assert_pairwise_distinct(batch):
    for a, b in itertools.combinations(batch.input_ids, 2):
        assert a != b


def test_random_prompts_are_seed_plus_b_exact_and_distinct():
    batch = random_prompts(1024, 64, 8, seed=5, exclude_ids=[0, 1, 2])
    assert batch.batch == 8 and batch.seeds == tuple(range(5, 13))
    assert batch.context_tokens_measured == 64 and batch.prompt_mode == "random_ids"
    for b, prompt in enumerate(batch.prompts):
        assert prompt == random_prompt(1024, 64, seed=5 + b, exclude_ids=[0, 1, 2])
        assert len(prompt.input_ids) == 64 and not {0, 1, 2} & set(prompt.input_ids)
    assert_pairwise_distinct(batch)
    assert random_prompts(1024, 64, 1, seed=5).prompts[0] == random_prompt(1024, 64, seed=5)  # row 0 = batch 1


def test_a_repeated_row_is_reseeded_until_every_row_differs():
    # 2 allowed ids x 3 positions: 8 possible prompts, and batch 8 needs every one of them.
    batch = random_prompts(4, 3, 8, seed=0, exclude_ids=[0, 1])
    assert sorted(map(tuple, batch.input_ids)) == sorted(itertools.product((2, 3), repeat=3))
    assert len(set(batch.seeds)) == 8 and all(s % 8 == b for b, s in enumerate(batch.seeds))  # seed + b + j x B
    assert batch == random_prompts(4, 3, 8, seed=0, exclude_ids=[0, 1])  # deterministic


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vocab_size": 4, "context_tokens": 3, "batch": 9, "exclude_ids": [0, 1]},  # 8 distinct prompts exist
        {"vocab_size": 4, "context_tokens": 50, "batch": 2, "exclude_ids": [0, 1, 2]},  # one id left
    ],
)
def test_impossible_random_batches_raise(kwargs):
    with pytest.raises(PromptLengthError, match="distinct"):
        random_prompts(**kwargs)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_batch_is_validated(loaded, bad):  # noqa: F811
    with pytest.raises(ValueError, match="batch"):
        random_prompts(1024, 8, bad)
    with pytest.raises(ValueError, match="batch"):
        build_prompts(loaded["plain_chat"], 64, bad)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
@pytest.mark.parametrize("context", [64, 300])
def test_pretrained_batches_are_exact_real_renderings_and_distinct(loaded, kind, context):  # noqa: F811
    tok = loaded[kind]
    batch = build_prompts(tok, context, 6, seed=3)
    assert batch.batch == 6 and batch.context_tokens_measured == context
    for prompt in batch.prompts:
        _check(tok, kind, prompt, context)  # exact length after the template, untruncated, generation prompt kept
    assert batch.prompts[0] == build_prompt(tok, context, seed=3)
    assert_pairwise_distinct(batch)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_short_fillers_are_made_distinct_or_refused(loaded, kind):  # noqa: F811
    tok = loaded[kind]
    minimum = _minimum(tok)
    batch = build_prompts(tok, minimum + 2, 16, seed=0)  # a two-token filler: seeds collide, rows are reseeded
    assert_pairwise_distinct(batch)
    assert batch.seeds != tuple(range(16))  # some rows did collide and were rebuilt from later seeds
    assert {len(ids) for ids in batch.input_ids} == {minimum + 2}
    assert build_prompts(tok, minimum, 1).context_tokens_measured == minimum
    with pytest.raises(PromptLengthError, match="distinct"):
        build_prompts(tok, minimum, 2)  # the empty filler is the only prompt of this length


def test_special_ids_of_a_card():
    assert sorted(special_token_ids(load_card("workflow/architectures/tiny-llama.json"))) == [0, 1, 2]
