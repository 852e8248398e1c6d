"""Which decode-attention implementation streams the KV cache fastest? A benchmark, not a test.

The decode-step profile of Qwen3-32B at 2048 tokens put 4.5 ms of a 23.8 ms step in the two
attention products, for 0.55 GB of KV cache. This script times one decode step's attention
(one query per head, a static cache with `context` valid positions of `context + gen - 1`) for
every layer of an architecture card, each variant captured as one CUDA graph over per-layer K and V
(so L2 cannot serve a repeat), and checks each variant's output against float32 math.

    python benchmarks/decode_attention.py --architecture workflow/architectures/qwen3-32b.json \
        --context 2048 --gen 64 --out attention.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _cell import graphed, shape_arguments, timed
from torch.nn import functional

from deploybench.engines import models
from deploybench.engines.compiled_loop import attention
from deploybench.enums import Device
from deploybench.instruments.environment import capture, resolve_device
from deploybench.stats import median


def repeat_kv_matmul(q, k, v, mask, scale):
    """transformers' eager attention: K and V copied for every query head, then two matmuls."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    probs = functional.softmax(q @ k.transpose(2, 3) * scale + mask, dim=-1, dtype=torch.float32)
    return probs.to(q.dtype) @ v


_LAYER = torch.nn.Module().eval()  # an attention layer without sinks (Qwen3, Llama)


def gqa_matmul(q, k, v, mask, scale):
    """deploybench's grouped-query eager attention (what compiled_loop runs)."""
    return attention.gqa_eager_attention(_LAYER, q, k, v, mask, scale)[0].transpose(1, 2)


def sdpa_gqa(q, k, v, mask, scale):
    return functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


def _probs_from_products(q, k, mask, scale):
    """Softmax over QK computed as a broadcast product and sum (a reduction for inductor), per KV
    head: (batch, kv_heads, query heads per KV head, cache length)."""
    batch, heads, _, dim = q.shape
    grouped = q.reshape(batch, k.shape[1], heads // k.shape[1], dim)
    logits = (grouped.unsqueeze(-2) * k.unsqueeze(2)).sum(-1) * scale + mask[:, :, 0]
    return functional.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)


def qk_products_pv_matmul(q, k, v, mask, scale):
    """QK as products and sums, PV as a matmul."""
    return (_probs_from_products(q, k, mask, scale) @ v).reshape(q.shape)


def products(q, k, v, mask, scale):
    """Both products as broadcast products and sums (the change reverted in 8a75fef)."""
    probs = _probs_from_products(q, k, mask, scale)
    return (probs.unsqueeze(-1) * v.unsqueeze(2)).sum(-2).reshape(q.shape)


def flex(context: int, length: int, device: str):
    """FlexAttention (flex decoding for one query) with a block mask over the written slots."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def written(batch, head, q_idx, kv_idx):
        return kv_idx < context

    block_mask = create_block_mask(written, B=None, H=None, Q_LEN=1, KV_LEN=length, device=device)

    def attend(q, k, v, mask, scale):
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)

    return attend


def loop_flex(q, k, v, mask, scale):
    """compiled_loop's flex_decoding kernel (attention.flex_decode): the mask as a score modification over
    every slot, as the decode step passes it."""
    return attention.flex_decode(_LAYER, q, k, v, mask, scale)[0].transpose(1, 2)


EAGER = {"repeat_kv_matmul": repeat_kv_matmul, "gqa_matmul": gqa_matmul, "sdpa_gqa": sdpa_gqa}
COMPILED = {
    "compiled_gqa_matmul": gqa_matmul,
    "compiled_sdpa_gqa": sdpa_gqa,
    "compiled_loop_flex_decoding": loop_flex,
    "compiled_qk_products_pv_matmul": qk_products_pv_matmul,
    "compiled_products": products,
}


def breaks_graph(name: str, device: str) -> bool:
    """The loop's FlexAttention runs outside the compiled graph on CPU (attention.breaks_graph says why)."""
    return name == "compiled_loop_flex_decoding" and attention.breaks_graph("flex_decoding", device)


def reference(q, k, v, mask, scale):
    return repeat_kv_matmul(q.float(), k.float(), v.float(), mask.float(), scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shape_arguments(parser, experts=None)
    parser.add_argument("--layers", type=int, help="default: the card's num_hidden_layers")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--variants", nargs="*", help=f"default: all of {[*EAGER, *COMPILED, 'compiled_flex']}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    device = resolve_device(Device.AUTO)
    card = json.loads(Path(args.architecture).read_text())
    heads, kv_heads = card["num_attention_heads"], card["num_key_value_heads"]
    dim = card.get("head_dim") or card["hidden_size"] // heads
    layers = args.layers or card["num_hidden_layers"]
    length = args.context + args.gen - 1  # the static cache the loop allocates
    dtype = models.TORCH_DTYPES[args.dtype]
    scale = dim**-0.5

    generator = torch.Generator(device=device).manual_seed(0)
    shape = (1, kv_heads, length, dim)
    keys = [torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(layers)]
    values = [torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(layers)]
    query = torch.randn((1, heads, 1, dim), generator=generator, device=device, dtype=dtype)
    mask = torch.zeros((1, 1, 1, length), device=device, dtype=dtype)
    mask[..., args.context :] = torch.finfo(dtype).min  # slots the cache has not written yet
    expected = reference(query, keys[0], values[0], mask, scale)
    kv_bytes = 2 * layers * keys[0].numel() * keys[0].element_size()

    chosen = args.variants or [*EAGER, *COMPILED, "compiled_flex"]
    results = {}
    for name in chosen:
        try:
            if name == "compiled_flex":
                fn = torch.compile(flex(args.context, length, device), fullgraph=True)
            else:
                fn = EAGER.get(name) or torch.compile(COMPILED[name], fullgraph=not breaks_graph(name, device))
            error = (fn(query, keys[0], values[0], mask, scale).float() - expected).abs().max().item()

            def all_layers(fn=fn):
                for k, v in zip(keys, values):
                    fn(query, k, v, mask, scale)

            run = graphed(all_layers, device)
            seconds = median([timed(run, device) for _ in range(args.repeats + 1)][1:])  # first: warm-up
        except Exception as exc:  # a variant this stack cannot run is a result, not a crash
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(name, results[name]["error"])
            continue
        results[name] = {
            "us_per_layer": seconds / layers * 1e6,
            "us_per_step": seconds * 1e6,
            "kv_bandwidth_bytes_per_s": kv_bytes / seconds,
            "max_abs_error_vs_float32": error,
        }
        print(
            f"{name:34s} {seconds / layers * 1e6:8.1f} us/layer {kv_bytes / seconds / 1e12:7.3f} TB/s err {error:.2e}"
        )

    report = {
        "architecture": args.architecture,
        "context": args.context,
        "cache_length": length,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": dim,
        "dtype": args.dtype,
        "kv_bytes_per_step": kv_bytes,
        "variants": results,
        "environment": capture(device),
    }
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
