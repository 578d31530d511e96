"""Tiny float64 test models, built from configs (nothing is downloaded).

Every builder seeds torch, builds the model, converts it to float64 and puts it in eval mode.
The models are fixtures: tests may mutate them freely. Hugging Face models keep their default
attention implementation (``sdpa``), as a user's model would; ``analysis()`` switches its copy to eager.

Builders:
    ``tiny(**overrides)``: :class:`TinyTransformer` (vocab 11, d_model 8, 2 heads, 2 layers, max_seq_len 8).
    ``gpt2()``, ``llama()`` (GQA: 2 query heads, 1 key/value head, untied head), ``qwen2()`` (q/k/v
    biases, tied head), ``mistral()`` (GQA 4/2), ``gpt_neox()`` (partial rotary, parallel residual),
    ``bert()`` (masked LM).

Helpers: ``random_batch(adapter, B, S)`` (padded batches), ``assert_groups_partition(adapter)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tscope_widgets.models import ModelAdapter, TinyConfig, TinyTransformer

VOCAB = 16  # Hugging Face models; special ids 1 (bos), 2 (eos), 0 (pad)
SPECIAL = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
SEED = 0


def _finish(model: nn.Module) -> nn.Module:
    return model.double().eval()


def tiny(**cfg_overrides) -> TinyTransformer:
    """TinyTransformer (vocab 11, d_model 8, n_head 2, n_layer 2, max_seq_len 8), float64, eval."""
    cfg = dict(vocab_size=11, d_model=8, n_head=2, n_layer=2, max_seq_len=8)
    cfg.update(cfg_overrides)
    torch.manual_seed(SEED)
    return _finish(TinyTransformer(TinyConfig(**cfg)))


def gpt2() -> nn.Module:
    """``GPT2LMHeadModel``: n_embd 8, 2 heads, 2 layers, inner 32, tied head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=16,
        n_embd=8,
        n_layer=2,
        n_head=2,
        n_inner=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.2,
        **SPECIAL,
    )
    return _finish(GPT2LMHeadModel(cfg))


def _llama_kwargs(**overrides) -> dict:
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        initializer_range=0.2,
        **SPECIAL,
    )
    kw.update(overrides)
    return kw


def llama() -> nn.Module:
    """``LlamaForCausalLM``: hidden 8, 2 query heads sharing 1 key/value head (GQA), untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    return _finish(LlamaForCausalLM(LlamaConfig(**_llama_kwargs(tie_word_embeddings=False))))


def qwen2() -> nn.Module:
    """``Qwen2ForCausalLM``: hidden 8, 2 heads, 2 key/value heads, q/k/v biases, tied head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(SEED)
    return _finish(
        Qwen2ForCausalLM(Qwen2Config(**_llama_kwargs(num_key_value_heads=2, tie_word_embeddings=True)))
    )


def mistral() -> nn.Module:
    """``MistralForCausalLM``: hidden 16, 4 query heads over 2 key/value heads, untied head."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(SEED)
    cfg = MistralConfig(
        **_llama_kwargs(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=4,
            tie_word_embeddings=False,
        )
    )
    return _finish(MistralForCausalLM(cfg))


def gpt_neox() -> nn.Module:
    """``GPTNeoXForCausalLM``: hidden 8, 2 heads, rotary on half of each head, parallel residual."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(SEED)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        initializer_range=0.2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        attention_dropout=0.0,
        hidden_dropout=0.0,
        tie_word_embeddings=False,
        **SPECIAL,
    )
    return _finish(GPTNeoXForCausalLM(cfg))


def bert() -> nn.Module:
    """``BertForMaskedLM``: hidden 8, 2 heads, 2 layers, intermediate 32, decoder tied to word embeddings."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(SEED)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        type_vocab_size=2,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **SPECIAL,
    )
    return _finish(BertForMaskedLM(cfg))


HF_BUILDERS = {
    "gpt2": gpt2,
    "llama": llama,
    "qwen2": qwen2,
    "mistral": mistral,
    "gpt_neox": gpt_neox,
    "bert": bert,
}


def random_batch(adapter: ModelAdapter, B: int, S: int, pad: bool = True, seed: int = 0) -> dict[str, Tensor]:
    """A seeded batch ``{"input_ids": [B, S] int64, "attention_mask": [B, S] int64}`` on the adapter's device.

    Token ids are uniform over the vocabulary. With ``pad=True`` (and ``S >= 3``), row ``b`` is
    unpadded for ``b % 3 == 0``, right-padded (last ``max(1, S // 3)`` positions) for ``b % 3 == 1``
    and left-padded (first ``max(1, S // 3)`` positions) for ``b % 3 == 2``; padded positions hold
    token id 0. Every row keeps at least 2 real tokens. Without padding the mask is all ones.
    """
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, adapter.vocab_size, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    if pad and S >= 3:
        n_pad = max(1, S // 3)
        rows = torch.arange(B)
        mask[rows % 3 == 1, S - n_pad :] = 0
        mask[rows % 3 == 2, :n_pad] = 0
        input_ids = input_ids.masked_fill(mask == 0, 0)
    return {"input_ids": input_ids.to(adapter.device), "attention_mask": mask.to(adapter.device)}


def assert_groups_partition(adapter: ModelAdapter, excluded: tuple[str, ...] = ()) -> None:
    """Every parameter (but ``excluded`` prefixes) is covered by exactly one group slice, elementwise."""
    params = dict(adapter.model.named_parameters())
    counts = {n: torch.zeros_like(p) for n, p in params.items()}
    for group, slices in adapter.param_groups().items():
        assert slices, group
        for s in slices:
            storage = params[s.name].untyped_storage().data_ptr()
            assert s.view(params).untyped_storage().data_ptr() == storage, f"{group}: {s} is a copy"
            s.view(counts).add_(1)  # a view into the counter: in-place adds land in it
    for name, c in counts.items():
        want = 0 if name.startswith(excluded) else 1
        assert (c == want).all(), f"{name}: covered {c.min().item():g}..{c.max().item():g} times, want {want}"
