"""iter_model_growth_rates: the growth-rate experiment on Hugging Face models, against a dense float64 Hessian."""

from __future__ import annotations

import math

import pytest
import torch

from tscope_widgets import iter_model_growth_rates
from tscope_widgets.jobs import load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")


def _gpt2(layers: int = 1) -> torch.nn.Module:
    config = transformers.GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=layers, n_head=2, n_inner=16,
                                     attn_implementation="eager")  # SDPA has no double backward
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids}


def _dense_block_norms(model, batch, sigma: float, seed: int, sigma_index: int) -> tuple[float, float]:
    """``||H_QQ||_F`` and ``||H_VV||_F`` of block 0 (weight and bias columns of ``c_attn``) by
    ``torch.autograd.functional.hessian`` of the mean next-token cross-entropy, embeddings redrawn as the kernel
    documents (``σ`` times N(0, 1) from the generator seeded ``seed * 1_000_003 + sigma_index + 1``)."""
    import copy

    m = copy.deepcopy(model).double()
    draw = torch.Generator().manual_seed(seed * 1_000_003 + sigma_index + 1)
    with torch.no_grad():
        for p in (m.transformer.wte.weight, m.transformer.wpe.weight):
            p.copy_(torch.randn(p.shape, generator=draw, dtype=torch.float64) * sigma)
    attn = m.transformer.h[0].attn.c_attn
    D = 8
    weight, bias = attn.weight.detach().clone(), attn.bias.detach().clone()
    ids = batch["input_ids"]

    def loss(part: int):
        def f(w, b):
            W, B = weight.clone(), bias.clone()
            W[:, part * D:(part + 1) * D], B[part * D:(part + 1) * D] = w, b
            out = torch.func.functional_call(m, {"transformer.h.0.attn.c_attn.weight": W,
                                                 "transformer.h.0.attn.c_attn.bias": B}, (ids,))
            logits = out.logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, 10), ids[:, 1:].reshape(-1))
        return f

    norms = []
    for part in (0, 2):  # query, value
        w0, b0 = weight[:, part * D:(part + 1) * D], bias[part * D:(part + 1) * D]
        H = torch.autograd.functional.hessian(loss(part), (w0, b0))
        norms.append(math.sqrt(sum(float(h.square().sum()) for row in H for h in row)))
    return norms[0], norms[1]


def test_exact_norms_equal_a_dense_hessian_of_the_redrawn_model():
    model, batch = _gpt2(), _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sigmas = (0.05, 0.5)
    *_, rates = iter_model_growth_rates(model, batch, sigmas=sigmas, seeds=[2], num_samples=4, exact_max=100)
    assert rates.done == rates.total == 2 and rates.labels == ["GPT2LMHeadModel block 0"]
    for i, sigma in enumerate(sigmas):
        q, v = _dense_block_norms(model, batch, sigma, seed=2, sigma_index=i)
        assert rates.norms[0, i, 0, 0, 0].item() == pytest.approx(q, rel=1e-10)
        assert rates.norms[0, i, 0, 1, 0].item() == pytest.approx(v, rel=1e-10)
    # the parts: ||H||^2 = ||G + F||^2, and each part is a norm of a symmetric matrix, so all finite and >= 0
    assert torch.isfinite(rates.norms).all() and (rates.norms >= 0).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model untouched


def test_a_pre_ln_gpt2_normalises_the_growth_away():
    """Without LayerNorm in front of attention the paper derives ||H_QQ|| ~ σ⁵ and ||H_VV|| ~ σ²; GPT-2 normalises
    its embeddings before attention, so on σ in [0.01, 0.1] (variance well above LayerNorm's eps) both slopes
    stay far below those laws (measured here: 0.28 and -0.86)."""
    sigmas = tuple(float(s) for s in torch.logspace(-2, -1, 4, dtype=torch.float64))
    *_, rates = iter_model_growth_rates(_gpt2(), _batch(), sigmas=sigmas, seeds=1, num_samples=4, exact_max=100)
    slopes, _ = rates.exponents(max_sigma=1.0)
    q_slope, v_slope = slopes[0, 0, 0].item(), slopes[0, 1, 0].item()
    assert abs(q_slope) < 1.5 and abs(v_slope) < 1.5
    assert rates.config["embedding_parameters"] == ["transformer.wte.weight", "transformer.wpe.weight"]


def test_llama_without_position_embeddings_and_a_resumed_run_equal_one_run(tmp_path):
    config = transformers.LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    kwargs = dict(sigmas=(0.1, 1.0), seeds=2, layer=1, num_samples=3)
    whole = list(iter_model_growth_rates(model, _batch()["input_ids"], **kwargs))[-1]
    assert whole.config["embedding_parameters"] == ["model.embed_tokens.weight"]
    first = next(iter(iter_model_growth_rates(model, _batch(), **kwargs)))
    save_checkpoint(tmp_path, first)
    resumed = list(iter_model_growth_rates(model, _batch(), resume=load_checkpoint(tmp_path), **kwargs))[-1]
    assert torch.equal(resumed.norms, whole.norms) and resumed.done == whole.total == 4
    with pytest.raises(ValueError, match="other seeds"):
        list(iter_model_growth_rates(model, _batch(), **{**kwargs, "seeds": 3}, resume=load_checkpoint(tmp_path)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"layer": 3}, r"layer must be in \[0, 1\)"), ({"seeds": 0}, "seeds must be >= 1"),
     ({"sigmas": (0.5, 0.1)}, "sigmas must be positive, finite and increasing"),
     ({"num_samples": 0}, "num_samples must be an int >= 1")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        next(iter_model_growth_rates(_gpt2(), _batch(), **kwargs))
