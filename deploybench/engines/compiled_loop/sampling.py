"""Next-token choice on the device, without a host sync: the compiled_loop backend's sampler.

The filters reproduce transformers' warpers (temperature, then top-k, then top-p, the order
generate() applies them) so a decoding mode means the same distribution in every backend. The
draw uses argmax(p / E) with E ~ Exp(1), an exact sample from p that, unlike torch.multinomial,
needs no host round trip and can live inside a CUDA graph.
"""

from __future__ import annotations

import torch

from deploybench.plan.spec import DecodingMode


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Scores after temperature, top-k and top-p, with removed tokens set to -inf."""
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    if top_k and top_k < scores.shape[-1]:
        kth_best = torch.topk(scores, top_k).values[..., -1, None]
        scores = scores.masked_fill(scores < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


def make_sampler(decoding: DecodingMode):
    """A function logits[batch, vocab] -> token ids[batch] for one decoding mode."""
    if not decoding.do_sample:
        return lambda logits: torch.argmax(logits, dim=-1)
    temperature, top_k, top_p = decoding.filters

    def sample(logits: torch.Tensor) -> torch.Tensor:
        probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
        exponential = torch.empty_like(probs).exponential_(1)
        return torch.argmax(probs / exponential, dim=-1)

    return sample
