"""TinyTransformer: every config option against an independent float64 forward, its parameter groups,
causality, padding, and config validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.testing import assert_close

from tests.model_zoo import assert_groups_partition, random_batch, tiny
from tscope_widgets.models import TinyAdapter, TinyConfig, TinyTransformer, adapt

OPTIONS = {
    "norm": ["pre", "post", "none"],
    "attention": ["softmax", "linear"],
    "activation": ["gelu", "relu"],
    "tie_weights": [False, True],
    "residual_scale": [1.0, 0.5],
    "d_mlp": [None, 0],
}
CONFIGS = [dict(zip(OPTIONS, values, strict=True)) for values in itertools.product(*OPTIONS.values())]


def _layer_norm(x: Tensor, P: dict[str, Tensor], name: str) -> Tensor:
    y = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    y = y * P[f"{name}.weight"]
    return y + P[f"{name}.bias"] if f"{name}.bias" in P else y


def tiny_reference(model: TinyTransformer, ids: Tensor, mask: Tensor) -> Tensor:
    """Logits ``[B, S, V]`` from the config's definitions, written out with the model's weights."""
    cfg = model.config
    P = {k: v.detach() for k, v in model.named_parameters()}
    B, S = ids.shape
    nh, dh = cfg.n_head, cfg.d_model // cfg.n_head
    a = 1.0 if cfg.residual_scale_mode == "attention_skip" else cfg.residual_scale  # on the branches
    skip = cfg.residual_scale if cfg.residual_scale_mode == "attention_skip" else 1.0  # on the attention skip
    allowed = torch.ones(S, S, dtype=torch.bool).tril() & mask.bool()[:, None, None, :]  # [B, 1, S, S]

    def lin(h: Tensor, name: str) -> Tensor:
        y = h @ P[f"{name}.weight"].T
        return y + P[f"{name}.bias"] if f"{name}.bias" in P else y

    def norm(h: Tensor, name: str) -> Tensor:
        return h if cfg.norm == "none" else _layer_norm(h, P, name)

    def attn(h: Tensor, p: str) -> Tensor:
        q, k, v = (
            lin(h, f"{p}.attn.{n}").view(B, S, nh, dh).transpose(1, 2) for n in "qkv"
        )  # [B, nh, S, dh]
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, nh, S, S]
        if cfg.attention == "softmax":
            weights = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1)
        else:  # linear self-attention: no softmax, masked scores
            weights = scores * allowed
        return lin((weights @ v).transpose(1, 2).reshape(B, S, cfg.d_model), f"{p}.attn.o")

    def mlp(h: Tensor, p: str) -> Tensor:
        act = F.gelu if cfg.activation == "gelu" else F.relu
        return lin(act(lin(h, f"{p}.mlp.fc_in")), f"{p}.mlp.fc_out")

    x = P["wte.weight"][ids] + P["wpe.weight"][:S]
    for i in range(cfg.n_layer):
        p = f"blocks.{i}"
        if cfg.norm == "post":
            x = norm(skip * x + a * attn(x, p), f"{p}.ln1")
            if cfg.mlp_width:
                x = norm(x + a * mlp(x, p), f"{p}.ln2")
        else:
            x = skip * x + a * attn(norm(x, f"{p}.ln1"), p)
            if cfg.mlp_width:
                x = x + a * mlp(norm(x, f"{p}.ln2"), p)
    if cfg.norm == "pre":
        x = _layer_norm(x, P, "ln_f")
    head = P.get("head.weight", P["wte.weight"])  # tied: listed once, as wte
    return x @ head.T


@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_config_option(options):
    model = tiny(**options)
    adapter = adapt(model)
    assert isinstance(adapter, TinyAdapter)
    batch = random_batch(adapter, B=3, S=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = mask.bool()
    with torch.no_grad():
        logits = adapter.logits(ids, mask)
        assert logits.shape == (3, 6, 11) and logits.isfinite().all()
        assert_close(logits[real], tiny_reference(model, ids, mask)[real], rtol=0, atol=1e-13)
        assert adapter.loss(batch).isfinite()

        # Causal: changing tokens from position 3 on leaves real outputs before 3 unchanged.
        changed = ids.clone()
        changed[:, 3:] = (changed[:, 3:] + 1) % 11
        after = adapter.logits(changed, mask)
        early = real[:, :3]
        assert_close(after[:, :3][early], logits[:, :3][early], rtol=0, atol=1e-14)
        assert not torch.allclose(after[:, 3:], logits[:, 3:])
        # Padding: other tokens at padded positions change no real output.
        padded = ids + (mask == 0) * 7
        assert_close(adapter.logits(padded, mask)[real], logits[real], rtol=0, atol=1e-14)

    assert_groups_partition(adapter)
    groups = adapter.param_groups()
    has_mlp = options["d_mlp"] != 0
    assert ("block0.mlp.in" in groups) == has_mlp and ("block1.mlp.out" in groups) == has_mlp
    assert ("block0.ln1" in groups) == (options["norm"] != "none")
    assert ("ln_f" in groups) == (options["norm"] == "pre") == (adapter.final_norm is not None)
    assert ("head" in groups) != options["tie_weights"]
    if options["tie_weights"]:
        assert model.head.weight is model.wte.weight


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_attention_skip_mode_against_reference(norm, attention):
    model = tiny(norm=norm, attention=attention, residual_scale=0.3, residual_scale_mode="attention_skip")
    adapter = adapt(model)
    batch = random_batch(adapter, B=2, S=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = mask.bool()
    with torch.no_grad():
        assert_close(adapter.logits(ids, mask)[real], tiny_reference(model, ids, mask)[real], rtol=0, atol=1e-13)


@pytest.mark.parametrize("mode", ["both", "attention_skip"])
def test_residual_scale_mode_changes_exactly_what_it_says(mode):
    """Block by block, from hooks: "attention_skip" gives a·x + attn and x' + mlp (the paper's fork);
    "both" gives x + a·attn and x' + a·mlp."""
    a = 0.37
    model = tiny(norm="pre", residual_scale=a, residual_scale_mode=mode)
    seen = {}
    block = model.blocks[1]
    block.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    block.attn.register_forward_hook(lambda m, args, out: seen.__setitem__("attn", out))
    block.ln2.register_forward_hook(lambda m, args, out: seen.__setitem__("mid", args[0]))
    block.mlp.register_forward_hook(lambda m, args, out: seen.__setitem__("mlp", out))
    block.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out))
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4]]))
    x, attn, mid, mlp, out = (seen[k] for k in ("x", "attn", "mid", "mlp", "out"))
    if mode == "attention_skip":
        assert_close(mid, a * x + attn, rtol=0, atol=1e-15)
        assert_close(out, mid + mlp, rtol=0, atol=1e-15)
    else:
        assert_close(mid, x + a * attn, rtol=0, atol=1e-15)
        assert_close(out, mid + a * mlp, rtol=0, atol=1e-15)
    # the two modes differ (a != 1), and agree at a = 1
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        other = tiny(norm="pre", residual_scale=a, residual_scale_mode="both" if mode != "both" else "attention_skip")
        assert not torch.allclose(model(ids), other(ids))
        one = [tiny(residual_scale=1.0, residual_scale_mode=m)(ids) for m in ("both", "attention_skip")]
        assert_close(one[0], one[1], rtol=0, atol=0)


def test_linear_attention_weights_are_raw_scaled_scores_with_causal_zeros():
    """Linear attention: A = (q kᵀ / sqrt(d_head)) with entries above the diagonal set to 0 (not -inf,
    not normalised): with identity v and o projections the output is exactly A @ x per head."""
    model = tiny(attention="linear", n_head=1, bias=False)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.v.weight.copy_(torch.eye(8))
        attn.o.weight.copy_(torch.eye(8))
        x = torch.randn(1, 5, 8, dtype=torch.float64)
        scores = attn.q(x) @ attn.k(x).transpose(-1, -2) / math.sqrt(8)  # [1, 5, 5]
        want = (scores * torch.ones(5, 5).tril()) @ x
        assert_close(attn(x), want, rtol=0, atol=1e-14)
        assert not torch.allclose(scores.tril().sum(-1), torch.ones(5, dtype=torch.float64))  # no normalisation
        # a future key changes nothing, and key padding zeroes the padded column
        x2 = x.clone()
        x2[:, 4] += 1.0
        assert_close(attn(x2)[:, :4], attn(x)[:, :4], rtol=0, atol=0)
        mask = torch.tensor([[True, False, True, True, True]])
        want_masked = (scores * torch.ones(5, 5).tril() * mask[:, None, :]) @ x
        assert_close(attn(x, mask), want_masked, rtol=0, atol=1e-14)


def test_final_layer_is_last_block_without_final_norm():
    for norm in ("post", "none"):
        adapter = adapt(tiny(norm=norm))
        batch = random_batch(adapter, B=2, S=5)
        out = adapter.forward_from_embeddings(
            adapter.embed(batch["input_ids"]), batch["attention_mask"], layers=[1, "final"]
        )
        assert_close(out["final"], out[1], rtol=0, atol=0)


def test_residual_scale_scales_both_branches():
    """With alpha -> 0 (and no norm) the model reduces to embeddings + positions through the head."""
    model = tiny(norm="none", residual_scale=0.0)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        want = (model.wte.weight[ids] + model.wpe.weight[:3]) @ model.head.weight.T
        assert_close(model(ids), want, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"norm": "layer"}, "TinyConfig.norm='layer'"),
        ({"attention": "relu"}, "TinyConfig.attention='relu'"),
        ({"activation": "tanh"}, "TinyConfig.activation='tanh'"),
        ({"residual_scale_mode": "mlp"}, "TinyConfig.residual_scale_mode='mlp'"),
        ({"d_model": 10, "n_head": 4}, "not divisible"),
        ({"vocab_size": 0}, "vocab_size must be >= 1"),
        ({"n_layer": 0}, "n_layer must be >= 1"),
        ({"max_seq_len": 0}, "max_seq_len must be >= 1"),
        ({"n_head": 0}, "n_head must be >= 1"),
        ({"d_mlp": -1}, "d_mlp must be >= 0"),
    ],
)
def test_invalid_config_raises(bad, message):
    with pytest.raises(ValueError, match=message):
        TinyConfig(**{"d_model": 8, "n_head": 2, **bad})


def test_forward_input_errors():
    model = tiny()
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="exactly one"):
        model(torch.zeros(1, 2, dtype=torch.long), inputs_embeds=torch.zeros(1, 2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="exceeds max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
