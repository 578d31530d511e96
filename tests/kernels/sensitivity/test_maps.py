"""position_sensitivity against dense float64 Jacobians (torch.autograd.functional.jacobian)."""

from __future__ import annotations

import pytest
import torch

from tests.model_zoo import HF_BUILDERS, random_batch, tiny
from tscope_widgets.kernels import sensitivity as sens
from tscope_widgets.kernels.sensitivity import passes, position_sensitivity
from tscope_widgets.models import adapt

B, S = 3, 5  # random_batch: row 0 unpadded, row 1 right-padded, row 2 left-padded
FUTURE = torch.ones(S, S, dtype=torch.bool).triu(1)  # j > i

TINY_CONFIGS = {
    "pre-softmax-gelu": dict(norm="pre"),
    "post-linear-relu-tied": dict(norm="post", attention="linear", activation="relu", tie_weights=True),
    "none-softmax-scaled": dict(norm="none", residual_scale=0.5, bias=False),
    "pre-attn-only-scaled": dict(norm="pre", d_mlp=0, residual_scale=2.0, tie_weights=True),
    "post-softmax-relu": dict(norm="post", activation="relu", residual_scale=0.7),
    "none-linear-gelu": dict(norm="none", attention="linear"),
}


# ----- dense references ---------------------------------------------------------------------------
def frobenius_map(hidden, e: torch.Tensor) -> torch.Tensor:
    """``||dh_i/de_j||_F^2 [S, S]`` from the dense Jacobian of ``hidden: [S, D] -> [S, H]``."""
    J = torch.autograd.functional.jacobian(hidden, e, vectorize=True)  # [S, H, S, D]
    return J.square().sum((1, 3))


def adapter_reference(adapter, ids, mask, layers, source="embeddings") -> dict:
    """Per-sample dense reference through ``forward_from_embeddings``: ``{layer: [B, S, S]}``."""
    e = adapter.source_activations(ids, mask, source)
    out = {}
    for lay in adapter.resolve_layers(layers):
        maps = []
        for b in range(ids.shape[0]):
            m = None if mask is None else mask[b : b + 1]

            def hidden(x, b=b, m=m, lay=lay):
                return adapter.forward_from_embeddings(x[None], m, [lay], source)[lay][0]

            maps.append(frobenius_map(hidden, e[b]))
        out[lay] = torch.stack(maps)
    return out


def tiny_reference(adapter, ids, mask, layers, source="embeddings") -> dict:
    """Like ``adapter_reference`` but with TinyTransformer's blocks run by hand (no hooks)."""
    model = adapter.model
    e = adapter.source_activations(ids, mask, source)
    first = 0 if source == "embeddings" else source

    def hidden(x, key_mask, lay):  # x [S, D] -> [S, H]
        x = x[None] + (model.wpe.weight[: x.shape[0]] if source == "embeddings" else 0)
        last = model.config.n_layer - 1 if lay == "final" else lay
        for block in model.blocks[first : last + 1]:
            x = block(x, key_mask)
        return (model.ln_f(x) if lay == "final" else x)[0]

    return {
        lay: torch.stack(
            [
                frobenius_map(lambda x, b=b, lay=lay: hidden(x, mask[b : b + 1].bool(), lay), e[b])
                for b in range(ids.shape[0])
            ]
        )
        for lay in adapter.resolve_layers(layers)
    }


def real_cells(mask: torch.Tensor) -> torch.Tensor:
    m = mask.bool()
    return m[:, :, None] & m[:, None, :]  # [B, S, S]


def assert_matches(values: dict, reference: dict, mask: torch.Tensor, causal: bool) -> None:
    real = real_cells(mask)
    for lay, ref in reference.items():
        got = values[lay]
        assert got.shape == (B, S, S) and got.dtype == torch.float64
        assert torch.isnan(got[~real]).all(), f"layer {lay}: padded cells must be NaN"
        scale = ref[real].abs().max()
        torch.testing.assert_close(got[real], ref[real], rtol=1e-9, atol=1e-12 * float(scale))
        if causal:
            assert (got[real & FUTURE] == 0).all(), f"layer {lay}: causal zeros must be exact"


# ----- exactness -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY_CONFIGS)
def test_exact_matches_dense_jacobian_tiny(name):
    model = tiny(**TINY_CONFIGS[name])
    adapter = adapt(model).analysis(torch.float64)
    batch = random_batch(adapter, B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    layers = [0, 1, "final"]
    ref = tiny_reference(adapter, ids, mask, layers)
    for mode in ("reverse", "forward"):
        got = position_sensitivity(model, ids, mask, layers=layers, mode=mode)
        assert got.info["mode"] == mode
        assert_matches(got, ref, mask, causal=True)
    src_ref = tiny_reference(adapter, ids, mask, [1, "final"], source=1)
    for mode in ("reverse", "forward"):
        got = position_sensitivity(model, ids, mask, layers=[1, "final"], source=1, mode=mode)
        assert_matches(got, src_ref, mask, causal=True)


@pytest.mark.parametrize("name", HF_BUILDERS)
def test_exact_matches_dense_jacobian_hf(name):
    model = HF_BUILDERS[name]()
    adapter = adapt(model).analysis(torch.float64)
    batch = random_batch(adapter, B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    layers = [0, -1, "final"]
    ref = adapter_reference(adapter, ids, mask, layers)
    for mode in ("reverse", "forward"):
        got = position_sensitivity(model, ids, mask, layers=layers, mode=mode)
        assert list(got) == [0, 1, "final"] and got[-1] is got[1]
        assert_matches(got, ref, mask, causal=adapter.causal)
        if not adapter.causal:  # BERT attends both ways
            assert (got["final"][real_cells(mask) & FUTURE] > 0).all()
    src_ref = adapter_reference(adapter, ids, mask, [1, "final"], source=1)
    got = position_sensitivity(model, ids, mask, layers=[1, "final"], source=1, mode="forward")
    assert_matches(got, src_ref, mask, causal=adapter.causal)


@pytest.mark.parametrize("name", ["tiny", "gpt2", "llama", "bert"])
def test_right_padding_equals_unpadded_sample(name):
    model = tiny() if name == "tiny" else HF_BUILDERS[name]()
    batch = random_batch(adapt(model), B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    padded = position_sensitivity(model, ids, mask, layers=[0, "final"])
    n = int(mask[1].sum())  # row 1 is right-padded
    alone = position_sensitivity(model, ids[1:2, :n], layers=[0, "final"])
    for lay in (0, "final"):
        torch.testing.assert_close(padded[lay][1, :n, :n], alone[lay][0], rtol=1e-12, atol=0)
        assert torch.isnan(padded[lay][1, n:]).all() and torch.isnan(padded[lay][1, :, n:]).all()


@pytest.mark.parametrize("name", ["tiny", "bert"])
def test_full_and_chunking_equal_exact(name):
    model = tiny() if name == "tiny" else HF_BUILDERS[name]()
    batch = random_batch(adapt(model), B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    layers = [0, "final"]
    default = position_sensitivity(model, ids, mask, layers=layers, mode="reverse")
    real = real_cells(mask)
    for kwargs in (
        dict(method="full", mode="reverse"),
        dict(method="full", mode="forward"),
        dict(mode="reverse", chunk_size=1),
        dict(mode="forward", chunk_size=1),
        dict(mode="reverse", chunk_size=7),
        dict(mode="forward"),
    ):
        got = position_sensitivity(model, ids, mask, layers=layers, **kwargs)
        for lay in layers:
            torch.testing.assert_close(got[lay][real], default[lay][real], rtol=1e-12, atol=1e-15)
            assert torch.isnan(got[lay][~real]).all()
        if kwargs.get("chunk_size") == 1:
            assert got.info["num_chunks"] == got.info["num_passes"]


@pytest.mark.parametrize("name", ["tiny", *HF_BUILDERS])
def test_causal_prefix_groups_match_dense_jacobian(name, monkeypatch):
    """Reverse passes run on causal prefixes ``e[:, :p]`` (one row per group, or rows split across
    passes) and give the dense full-sequence Jacobian's numbers with left and right padding (the
    left-padded row's first prefix is all padding); BERT (not causal) is never grouped."""
    monkeypatch.setattr(passes, "MIN_PASS_WORK", 1)  # as many groups as rows
    monkeypatch.setattr(passes, "MIN_VECTORS_PER_PASS", 1)
    model = tiny() if name == "tiny" else HF_BUILDERS[name]()
    adapter = adapt(model).analysis(torch.float64)
    batch = random_batch(adapter, B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    layers = [0, -1, "final"]
    ref = adapter_reference(adapter, ids, mask, layers)
    grouped = position_sensitivity(model, ids, mask, layers=layers, mode="reverse")
    groups = S if adapter.causal else 1
    assert grouped.info["prefix_groups"] == groups and grouped.info["num_chunks"] == 3 * groups
    assert_matches(grouped, ref, mask, causal=adapter.causal)
    split = position_sensitivity(model, ids, mask, layers=layers, mode="reverse", chunk_size=3)
    assert split.info["num_chunks"] == 3 * -(-S * adapter.d_model // 3)  # ceil(S*H / 3) per layer
    assert split.info["largest_pass"] == 3 and grouped.info["largest_pass"] == S * adapter.d_model // groups
    assert_matches(split, ref, mask, causal=adapter.causal)
    if name in ("tiny", "gpt2"):
        src_ref = adapter_reference(adapter, ids, mask, [1, "final"], source=1)
        got = position_sensitivity(model, ids, mask, layers=[1, "final"], source=1, mode="reverse")
        assert got.info["prefix_groups"] == S
        assert_matches(got, src_ref, mask, causal=True)


@pytest.mark.parametrize("name", ["tiny", "gpt2"])
def test_hutchinson_probes_do_not_depend_on_grouping(name, monkeypatch):
    model = tiny() if name == "tiny" else HF_BUILDERS[name]()
    batch = random_batch(adapt(model), B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def run(**kw):
        return position_sensitivity(
            model,
            ids,
            mask,
            layers=[0, "final"],
            method="hutchinson",
            probes=4,
            mode="reverse",
            generator=torch.Generator().manual_seed(7),
            return_stderr=True,
            **kw,
        )

    whole, whole_se = run()
    assert whole.info["prefix_groups"] == 1
    monkeypatch.setattr(passes, "MIN_PASS_WORK", 1)
    monkeypatch.setattr(passes, "MIN_VECTORS_PER_PASS", 1)
    for kw in (dict(), dict(chunk_size=3)):
        grouped, grouped_se = run(**kw)
        assert grouped.info["prefix_groups"] == S
        real = real_cells(mask)
        for lay in (0, "final"):
            torch.testing.assert_close(grouped[lay][real], whole[lay][real], rtol=1e-12, atol=0)
            torch.testing.assert_close(grouped_se[lay][real], whole_se[lay][real], rtol=1e-10, atol=0)
            assert torch.isnan(grouped[lay][~real]).all()


def test_prefix_groups_follow_the_work_per_pass():
    """About MIN_PASS_WORK of work and at least MIN_VECTORS_PER_PASS vectors per pass, at most
    min(S, MAX_PREFIX_GROUPS) groups."""
    model = adapt(tiny()).analysis(torch.float64)  # D = 8
    e = torch.zeros(4, 6, 8, dtype=torch.float64)
    problem = passes._Problem(model, e, None, [0], "embeddings")
    work = 6 * 8 * 6 * 4 * 8 * 8  # S * width * S * B * D^2
    assert passes._prefix_groups(problem, 8) == max(1, min(6, work // passes.MIN_PASS_WORK))
    many = torch.zeros(1, 6, 8, dtype=torch.float64).expand(2**16, 6, 8)  # only the shape matters
    big = passes._Problem(model, many, None, [0], "embeddings")
    assert passes._prefix_groups(big, 16) == 6  # capped at S
    assert passes._prefix_groups(big, 8) == 6 * 8 // passes.MIN_VECTORS_PER_PASS == 3  # 16 vectors a pass
    assert passes._prefix_groups(big, 1) == 1
    plan = passes._PassPlan(40, chunk=6, groups=5)
    assert len(plan.bounds) == 7 and all(0 < b - a <= 6 for a, b in plan.bounds)
    assert [a for a, _ in plan.bounds][0] == 0 and plan.bounds[-1][1] == 40
    assert len(passes._PassPlan(40, chunk=40, groups=5).bounds) == 5
    assert len(passes._PassPlan(3, chunk=40, groups=5).bounds) == 3


@pytest.mark.parametrize(
    "activation, fused",
    [
        ("gelu_new", True),  # NewGELUActivation, GPT-2's default
        ("gelu_pytorch_tanh", True),
        ("gelu_python_tanh", True),
        ("gelu_accurate", True),
        ("gelu", True),
        ("gelu_python", True),
        ("gelu_fast", False),  # rounded sqrt(2/pi): not the same function
        ("quick_gelu", False),
    ],
)
def test_analysis_copy_fuses_gelu_without_changing_the_function(activation, fused):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=16, n_positions=16, n_embd=8, n_layer=2, n_head=2, n_inner=32,
        activation_function=activation, initializer_range=0.5,
    )  # fmt: skip
    model = GPT2LMHeadModel(cfg).double().eval()
    user_act = model.transformer.h[0].mlp.act
    copy = adapt(model).analysis(torch.float64)
    act = copy.model.transformer.h[0].mlp.act
    assert type(model.transformer.h[0].mlp.act) is type(user_act)  # the user's model keeps its class
    assert isinstance(act, type(user_act)) and type(act).__name__.endswith("SlopeSaving") == fused
    x = torch.cat([torch.linspace(-12, 12, 4001, dtype=torch.float64), 3 * torch.randn(4000).double()])
    torch.testing.assert_close(act(x), user_act(x), rtol=0, atol=4e-15)
    ids = torch.randint(0, 16, (2, 6))
    user = adapt(model).forward_from_embeddings(adapt(model).embed(ids), None, [0, 1])
    ours = copy.forward_from_embeddings(copy.embed(ids), None, [0, 1])
    for lay in (0, 1):
        torch.testing.assert_close(ours[lay], user[lay], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_slope_saving_gelu_derivatives_equal_f_gelu(approximate):
    """Values, first and second derivatives in both AD modes, and vmapped VJPs/JVPs equal F.gelu's."""
    from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

    from tscope_widgets.models.hf import SlopeSavingGELU

    def ours(x):
        return SlopeSavingGELU.apply(x, approximate)

    def theirs(x):
        return torch.nn.functional.gelu(x, approximate=approximate)

    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(40, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(ours, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(ours, (x,))
    x = x.detach()
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-15)

    def cubic(f):
        return lambda x: f(x).pow(3).sum()

    torch.testing.assert_close(hessian(cubic(ours))(x), hessian(cubic(theirs))(x), rtol=1e-12, atol=1e-12)
    v = torch.randn(40, generator=g, dtype=torch.float64)
    fwd_rev = jvp(grad(cubic(ours)), (x,), (v,))[1]
    torch.testing.assert_close(fwd_rev, jvp(grad(cubic(theirs)), (x,), (v,))[1], rtol=1e-12, atol=1e-12)
    eye = torch.eye(40, dtype=torch.float64)
    torch.testing.assert_close(vmap(vjp(ours, x)[1])(eye)[0], jacrev(theirs)(x), rtol=1e-14, atol=1e-15)
    tangents = vmap(lambda t: jvp(ours, (x,), (t,))[1])(eye)
    torch.testing.assert_close(tangents, jacfwd(theirs)(x), rtol=1e-14, atol=1e-15)
    batch = x.view(8, 5)
    torch.testing.assert_close(vmap(jacrev(ours))(batch), vmap(jacrev(theirs))(batch), rtol=1e-14, atol=1e-15)


def test_auto_mode_picks_cheaper_mode_and_records_it():
    # choose_mode's estimate: reverse sum(depths) * H * (1/2 if causal else 1), forward max(depth) * D * 2
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model = tiny()  # D = H = 8, 2 blocks
    one = position_sensitivity(model, ids, layers=[0])  # reverse 1*8/2 = 4 < forward 1*8*2 = 16
    two = position_sensitivity(model, ids, layers=[0, 1])  # reverse 3*8/2 = 12 < forward 2*8*2 = 32
    assert (one.info["mode"], one.info["num_passes"]) == ("reverse", 40)
    assert (two.info["mode"], two.info["num_passes"]) == ("reverse", 80)
    assert one.info["method"] == "exact" and one.info["dtype"] == "float64"
    deep = tiny(n_layer=8)
    every = position_sensitivity(deep, ids, layers="all")  # reverse 36*8/2 = 144 > forward 8*8*2 = 128
    assert (every.info["mode"], every.info["num_passes"]) == ("forward", 40)
    late = position_sensitivity(deep, ids, layers=[6, 7], source=6)  # depths 1, 2: reverse 12 < 32
    assert (late.info["mode"], late.info["num_passes"]) == ("reverse", 80)
    hutch = position_sensitivity(deep, ids, layers="all", method="hutchinson", probes=3)  # 54 > 48
    assert (hutch.info["mode"], hutch.info["num_passes"]) == ("forward", 15)
    # not causal: reverse 3*8 = 24 < forward 32 for 2 layers; 4 layers: 10*8 = 80 > 4*8*2 = 64
    assert sens.choose_mode("exact", "auto", [1, 2], 8, 8, 8, causal=False) == "reverse"
    assert sens.choose_mode("exact", "auto", [1, 2, 3, 4], 8, 8, 8, causal=False) == "forward"
    assert sens.choose_mode("exact", "forward", [1], 8, 8, 8, causal=True) == "forward"


def test_automatic_chunk_respects_memory_budget(monkeypatch):
    model = tiny()
    ids = torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
    full_chunk = position_sensitivity(model, ids, layers=[0, 1], mode="reverse")
    # one pass per target layer (reverse VJPs run layer by layer)
    assert full_chunk.info["chunk_size"] == 80 and full_chunk.info["num_chunks"] == 2
    per_vector = passes._vector_bytes(torch.zeros(2, 5, 8, dtype=torch.float64), 2, 8, adapt(model))
    monkeypatch.setattr(passes, "CHUNK_MEMORY_BUDGET", 6 * per_vector)
    small = position_sensitivity(model, ids, layers=[0, 1], mode="reverse")
    assert small.info["chunk_size"] == 6 and small.info["num_chunks"] == 14
    for lay in (0, 1):
        torch.testing.assert_close(small[lay], full_chunk[lay], rtol=1e-12, atol=0)


def test_unsquared_is_frobenius_norm_and_dtype_promotion():
    model = tiny()
    ids = torch.tensor([[1, 2, 3, 4]])
    sq = position_sensitivity(model, ids, layers=["final"])
    norm = position_sensitivity(model, ids, layers=["final"], squared=False)
    torch.testing.assert_close(norm["final"], sq["final"].sqrt())
    assert position_sensitivity(model.float(), ids).info["dtype"] == "float32"
    low = position_sensitivity(tiny().to(torch.bfloat16), ids)
    assert low[-1].dtype == torch.float32
    assert position_sensitivity(model, ids, dtype=torch.float32)[-1].dtype == torch.float32


def test_user_model_untouched():
    model = tiny().float().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    position_sensitivity(model, torch.tensor([[1, 2, 3]]), dtype=torch.float64)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----- Hutchinson -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_hutchinson_unbiased_within_standard_errors(mode):
    model = tiny(norm="post")
    batch = random_batch(adapt(model), B, S)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    layers = [0, "final"]
    exact = position_sensitivity(model, ids, mask, layers=layers)
    est, se = position_sensitivity(
        model,
        ids,
        mask,
        layers=layers,
        method="hutchinson",
        probes=400,
        mode=mode,
        generator=torch.Generator().manual_seed(1),
        return_stderr=True,
    )
    assert est.info["mode"] == mode and est.info["num_passes"] == 400 * (2 * S if mode == "reverse" else S)
    real = real_cells(mask)
    for lay in layers:
        assert torch.isnan(est[lay][~real]).all() and torch.isnan(se[lay][~real]).all()
        assert (est[lay][real & FUTURE] == 0).all() and (se[lay][real & FUTURE] == 0).all()
        cells = real & ~FUTURE
        z = (est[lay][cells] - exact[lay][cells]) / se[lay][cells]
        assert z.abs().max() < 4.5, z
        assert (z.abs() > 3).float().mean() <= 0.05
        assert 0.4 < z.square().mean() < 2.0  # the stderr is calibrated


def test_hutchinson_stderr_shrinks_like_inverse_sqrt_k_and_is_chunk_independent():
    model = tiny()
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    cells = ~FUTURE.expand(2, S, S)

    def run(K, seed, **kw):
        return position_sensitivity(
            model,
            ids,
            layers=[1],
            method="hutchinson",
            probes=K,
            mode="reverse",
            generator=torch.Generator().manual_seed(seed),
            return_stderr=True,
            **kw,
        )

    _, se16 = run(16, 0)
    _, se256 = run(256, 1)
    ratio = (se16[1][cells] / se256[1][cells]).median()
    assert 3.0 < ratio < 5.3  # sqrt(256 / 16) = 4
    a, sa = run(5, 3)
    b, sb = run(5, 3, chunk_size=1)
    c, sc = run(5, 3, chunk_size=13)
    for other, other_se in ((b, sb), (c, sc)):
        torch.testing.assert_close(other[1], a[1], rtol=1e-12, atol=0)
        torch.testing.assert_close(other_se[1], sa[1], rtol=1e-10, atol=0)
    root, root_se = position_sensitivity(
        model,
        ids,
        layers=[1],
        method="hutchinson",
        probes=5,
        mode="reverse",
        generator=torch.Generator().manual_seed(3),
        return_stderr=True,
        squared=False,
    )
    torch.testing.assert_close(root[1], a[1].sqrt())
    torch.testing.assert_close(root_se[1][cells], (sa[1] / (2 * a[1].sqrt()))[cells])


# ----- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="jacobian"), ValueError, "unknown method"),
        (dict(mode="sideways"), ValueError, "unknown mode"),
        (dict(method="hutchinson", probes=0), ValueError, "probes must be >= 1"),
        (dict(probes=2.5), TypeError, "probes must be an int"),
        (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
        (dict(layers=[0], source=1), ValueError, "before source block 1"),
        (dict(layers=["middle"]), ValueError, "unknown layer"),
        (dict(layers=[5]), ValueError, "out of range"),
        (dict(source="logits"), ValueError, "unknown source"),
        (dict(return_stderr=True), ValueError, "method=.hutchinson. only"),
        (dict(method="hutchinson", probes=1, return_stderr=True), ValueError, "probes >= 2"),
        (dict(dtype="float64"), TypeError, "torch.dtype"),
        (dict(dtype=torch.int64), TypeError, "floating point"),
        (dict(method="hutchinson", generator=0), TypeError, "torch.Generator"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        position_sensitivity(tiny(), torch.tensor([[1, 2, 3]]), **kwargs)


def test_bad_inputs():
    model = tiny()
    with pytest.raises(TypeError, match="integer token ids"):
        position_sensitivity(model, torch.ones(1, 3))
    with pytest.raises(ValueError, match="token ids must lie in"):
        position_sensitivity(model, torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match="does not match input_ids"):
        position_sensitivity(model, torch.tensor([[1, 2]]), torch.ones(1, 3))
    with pytest.raises(TypeError, match="no adapter"):
        position_sensitivity(torch.nn.Linear(2, 2), torch.tensor([[1, 2]]))


def test_full_refuses_large_inputs(monkeypatch):
    monkeypatch.setattr(passes, "FULL_JACOBIAN_MAX_BYTES", 10_000)
    with pytest.raises(ValueError, match=r"method='full'.*MiB.*use method='exact'"):
        position_sensitivity(tiny(), torch.tensor([[1, 2, 3, 4]]), method="full")


def test_non_finite_hidden_states_name_the_layer():
    model = tiny()
    with torch.no_grad():
        model.blocks[1].mlp.fc_in.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"layer 1 .*not finite.*float64"):
        position_sensitivity(model, torch.tensor([[1, 2, 3]]), layers=[0, 1, "final"])
