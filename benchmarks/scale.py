"""Benchmark at the size users work at: GPT-2-small (124M) and GPT-2-medium (350M) shapes, side by side with
the route a user would otherwise take, in one run.

Models, built from configs (transformers' own modules, ``attn_implementation="eager"``, eval mode, float32,
random initialization, bos/eos/pad token 0):
  small       GPT2LMHeadModel, 12 layers, n_embd 768, 12 heads, vocab 50,257, 1024 positions: 124,439,808
              parameters (LM head tied to the token embedding, counted once). Every row.
  medium      GPT2LMHeadModel, 24 layers, n_embd 1024, 16 heads: 354,823,168 parameters. Rows hvp and landscape.
  qwen2-1.5b  (--gpu only) Qwen2ForCausalLM from a Qwen2Config with the published Qwen2-1.5B sizes: hidden
              1536, 28 layers, 12 heads, 2 key/value heads, intermediate 8960, vocab 151,936, tied embeddings,
              rope_theta 1e6, RMSNorm eps 1e-6: about 1.54B parameters. Rows hvp and landscape.
Data: one batch of 4 x 32 random tokens (qwen2-1.5b: 32 x 64), labels = inputs. Loss everywhere: the adapter's
LM loss, mean cross-entropy of logits position t on token t + 1; the plain routes and the peers compute it as
``F.cross_entropy(logits[:, :-1], ids[:, 1:])`` (``benchmarks/landscape.py: lm_loss``; the peers through
``benchmarks/curvature.py: Logits``, a module returning logits and a criterion module).

Threads: ``--threads 1`` (default: torch.set_num_threads(1) in every measuring process) or ``--threads all``
(os.cpu_count()). Every measured method runs in its own subprocess (``_harness.spawn``), so its memory is its
own: "peak added" = ru_maxrss after the measured part minus ru_maxrss before it (model, batch and input vectors
already built; ru_maxrss is a high-water mark, so a part that stays below an earlier peak of the process shows
little), "peak" = the process's absolute ru_maxrss. On CUDA both come from torch.cuda.max_memory_allocated
(peak minus the allocation before the part, and the peak). Wall time is time.perf_counter, CPU time is
time.process_time (all threads of the process). On CPU each child also sets RLIMIT_DATA (``--mem-limit-gb``,
default 90% of the memory available when the run starts), so a method that does not fit fails with an
allocation error in its row instead of waking the kernel's OOM killer on a shared machine.

Rows (methods; "products" = Hessian-vector products):
  hvp        One product, sizes small and medium (+ qwen2-1.5b with --gpu). Reported: setup (s), the first
             product (s; for ours it builds the gradient graph), the median of --repeats later products
             (wall and CPU), peak memory.
             plain        the ten-line double backward: params = list(model.parameters()),
                          g = torch.autograd.grad(loss, params, create_graph=True) once (setup), then
                          torch.autograd.grad(g, params, v, retain_graph=True) per product
             ours         HessianOperator(model, batch) (route "auto"); setup = the constructor
             ours_block   HessianOperator(model, batch, groups="block5.attn.*"): the 4 groups q, k, v, o of one
                          block (block min(5, n_layer - 1) in --quick); must cost less than the whole model
             ours_fd      HessianOperator(model, batch, route="finite_difference") ("not available" when the
                          constructor raises ValueError for that route)
             ours_ggn     HessianOperator(model, batch, kind="ggn")
             Check (after the timing): the Rayleigh quotient g^T H g / g^T g of the gradient g, which does not
             depend on how a method orders its flat vector; ours and ours_fd against plain.
             Targets: ours product <= 1.2x plain, ours peak added <= 1.5x plain.
  lambda     lambda_max to 1e-3 relative, small only. One timed run per method (no warm-up).
             ours         lanczos(HessianOperator(model, batch), k=1, tol=1e-3, criterion="eigenvalue"): stops when
                          the Ritz value's error estimate min(r, r²/gap) <= 1e-3·λ; products = its num_matvecs.
                          The same run then goes on (untimed) until the Ritz residual r <= 1e-3·λ: that Ritz
                          value (error about r²/gap, far below 1e-3) is the REFERENCE every λ is compared with.
                          Afterwards, untimed, lanczos(..., which="smallest") for lambda_min (below 10M
                          parameters), to show which end a power iteration finds
             pyhessian    pyhessian.hessian(net, criterion, data=(ids, labels), cuda=...).eigenvalues(top_n=1,
                          tol=1e-3) after torch.manual_seed(0): power iteration (maxIter 100) that stops when two
                          consecutive Rayleigh quotients differ by < 1e-3 relative, which is not an error bound
                          (slow convergence stops it early); it converges to the largest |eigenvalue|
             pyhessian_tight  the same with tol=1e-4, for a peer result that is actually within 1e-3
             he           hessian_eigenthings.lanczos(HessianOperator(net, [(ids, labels)], loss_fn), k=1,
                          which="LA", tol=1e-3, max_iter=m, seed=0). The package runs exactly max_iter steps (its
                          default 2k = 2 is far from 1e-3), so m is the smallest of 5, 10, 15, 20, 25, 30, 40, 50,
                          60, 80, 100 whose result the package itself reports converged (residual < tol |lambda|),
                          found in a separate, untimed subprocess (its products are reported as "search"), or
                          --he-max-iter
             Target: ours wall <= 0.5x the fastest peer; the error of each λ against the reference is reported.
  trace      hutchpp_trace(HessianOperator(model, batch), 100) (--trace-products), small only: estimate, stderr.
             Hutch++ keeps its sketch, one [P, m/3] matrix (33 vectors of 124M float32, 15.3 GiB, at m = 100,
             orthonormalised in place), so at GPT-2-small size it needs about 20 GB with the model (the child logs
             the figure).
  slq        slq_density(HessianOperator(model, batch, groups=g), num_probes=10, num_steps=50), small only, for
             g = "block0.attn.*" and "block11.mlp.*" (the last block in --quick), each in its own subprocess:
             products and the range of the Ritz nodes.
  landscape  5 x 5 grid, alphas = betas = linspace(-1, 1, 5), two filter-normalized Gaussian directions
             (random_direction, seeds 10 and 11), sizes as hvp. Methods from benchmarks/landscape.py:
             ours   slice_2d(model, batch, d1, d2, alphas, betas) (default points_per_call), final snapshot
             plain  per grid point p.copy_(p0 + a d1 + b d2) in place under no_grad for every parameter, then
                    model(input_ids=ids).logits and the loss; the parameters restored at the end
             bare   25 forward passes of the same batch with the loss, no parameter change: the floor
             The first (cold) run gives the memory; the time is the median of --landscape-repeats later runs.
             Check: max |loss difference| of each grid against plain. Target: ours <= 1.1x bare.
  sens       Position-to-position sensitivity s_ij = ||dh_i/de_j||_F^2 of the last block's output with respect
             to the token embeddings, small only, batch 2. Each method first runs once on 1 sample x 2 tokens
             (warm-up), then once measured.
             ours_hutch   position_sensitivity(model, ids[2 x 16], layers=[-1], method="hutchinson", probes=8)
             loop_hutch   per sample, per output position i, per Rademacher probe v (8): one
                          autograd.grad(h_i, e, v) of the embeddings (graph of the sample kept), mean of squares
             ours_exact   position_sensitivity(model, ids[2 x 8], layers=[-1], method="exact")
             loop_exact   the same loop over the n_embd one-hot vectors per position (S x 768 backward passes per
                          sample)
             The loops can be timed on the first --sens-samples samples and extrapolated linearly to the batch
             (the "samples timed" column then reads "n/B (extrapolated)"). Check: loop_exact against ours_exact
             (max relative difference on the samples computed); the two Hutchinson estimates against each other
             (relative Frobenius difference: both are random, with ~5-10% error each). Target: loop / ours >= 3x.

Peers (versions recorded in the environment line) are installed into the project venv without ever replacing
the pinned torch, exactly as in benchmarks/curvature.py's docstring (only these two are needed here):
  .venv/bin/python -m pip install -c constraints.txt --no-deps pyhessian==0.1 hessian-eigenthings==1.0.0a5
  .venv/bin/python -m pip show torch           # still 2.13.0
  .venv/bin/python -c "import transformers, torch, pyhessian, hessian_eigenthings"

--quick: "small" is 2 layers, n_embd 64, 4 heads, vocab 512 (198,400 parameters; qwen2-1.5b with --gpu becomes
2 layers, hidden 64, 4 heads, 2 kv heads, intermediate 128, vocab 512), "medium" is skipped, 3 later products,
1 landscape repeat: a smoke run of every code path (about 2-3 minutes on 2 shared cores), not a measurement.

Output: markdown tables (one per row) and the verdicts against the targets on stdout, also written to
benchmarks/results/scale-<timestamp>.md with the JSON (environment and every measured row) beside it as
scale-<timestamp>.json (benchmarks/results/ is git-ignored). Progress lines go to stderr.

Usage:
  python benchmarks/scale.py [--rows hvp,lambda,trace,slq,landscape,sens] [--sizes small,medium]
                             [--threads 1|all] [--repeats 5] [--sens-samples N] [--gpu] [--quick]
  python benchmarks/scale.py --quick                      # smoke run
  python benchmarks/scale.py --threads all                # all cores
  python benchmarks/scale.py --gpu                        # on CUDA, adds qwen2-1.5b to hvp and landscape
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
import warnings

from _harness import environment, spawn

ROWS = ["hvp", "lambda", "trace", "slq", "landscape", "sens"]
METHODS = {
    "hvp": ["plain", "ours", "ours_block", "ours_fd", "ours_ggn"],
    "lambda": ["ours", "pyhessian", "pyhessian_tight", "he"],
    "trace": ["ours"],
    "slq": ["ours"],
    "landscape": ["plain", "bare", "ours"],
    "sens": ["ours_hutch", "loop_hutch", "ours_exact", "loop_exact"],
}
MULTI_SIZE_ROWS = {"hvp", "landscape"}  # the other rows run at "small" only
LABELS = {
    ("hvp", "plain"): "plain double backward (ten lines)",
    ("hvp", "ours"): "ours HessianOperator (auto)",
    ("hvp", "ours_block"): "ours, one block's attention (4 groups)",
    ("hvp", "ours_fd"): "ours, route=finite_difference",
    ("hvp", "ours_ggn"): "ours, kind=ggn",
    ("lambda", "ours"): "ours lanczos(k=1, tol=1e-3, criterion=\"eigenvalue\")",
    ("lambda", "pyhessian"): "PyHessian eigenvalues(top_n=1, tol=1e-3)",
    ("lambda", "pyhessian_tight"): "PyHessian eigenvalues(top_n=1, tol=1e-4)",
    ("lambda", "he"): "hessian-eigenthings lanczos (LA, tol=1e-3, tuned max_iter)",
    ("landscape", "plain"): "plain copy_ + forward loop",
    ("landscape", "bare"): "25 bare forwards (floor)",
    ("landscape", "ours"): "ours slice_2d",
    ("sens", "ours_hutch"): "ours hutchinson k=8",
    ("sens", "loop_hutch"): "loop: autograd.grad per sample, position, probe",
    ("sens", "ours_exact"): "ours exact",
    ("sens", "loop_exact"): "loop: autograd.grad per sample, position, coordinate",
}

GPT2_SMALL = dict(arch="gpt2", n_layer=12, n_embd=768, n_head=12, vocab=50257, batch=(4, 32))
SHAPES = {
    "small": GPT2_SMALL,
    "medium": dict(arch="gpt2", n_layer=24, n_embd=1024, n_head=16, vocab=50257, batch=(4, 32)),
    "qwen2-1.5b": dict(
        arch="qwen2", n_layer=28, n_embd=1536, n_head=12, n_kv=2, inter=8960, vocab=151936, batch=(32, 64)
    ),
}
QUICK_SHAPES = {
    "small": dict(arch="gpt2", n_layer=2, n_embd=64, n_head=4, vocab=512, batch=(4, 32)),
    "qwen2-1.5b": dict(arch="qwen2", n_layer=2, n_embd=64, n_head=4, n_kv=2, inter=128, vocab=512, batch=(4, 32)),
}
LAMBDA_TOL = 1e-3
HE_MAX_ITERS = (5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100)
SLQ_PROBES, SLQ_STEPS = 10, 50
GRID = 5  # landscape grid points per axis
SENS = dict(batch=2, hutch_seq=16, exact_seq=8, probes=8)
TARGETS = dict(product=1.2, memory=1.5, lambda_vs_peer=0.5, landscape=1.1, sens=3.0)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----- models and data ---------------------------------------------------------------------------------------
def build(shape: dict, device: str):
    """The model (eval mode, float32, eager attention, built directly on ``device``) and ``{input_ids, labels}``."""
    import torch

    torch.manual_seed(0)
    if shape["arch"] == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cls = GPT2LMHeadModel
        cfg = GPT2Config(
            vocab_size=shape["vocab"],
            n_embd=shape["n_embd"],
            n_layer=shape["n_layer"],
            n_head=shape["n_head"],
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            attn_implementation="eager",
        )
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cls = Qwen2ForCausalLM
        token = 151643 if shape["vocab"] > 151643 else 0  # Qwen2's published bos/eos id, inside the vocabulary
        cfg = Qwen2Config(
            vocab_size=shape["vocab"],
            hidden_size=shape["n_embd"],
            intermediate_size=shape["inter"],
            num_hidden_layers=shape["n_layer"],
            num_attention_heads=shape["n_head"],
            num_key_value_heads=shape["n_kv"],
            max_position_embeddings=32768,
            rope_theta=1e6,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            bos_token_id=token,
            eos_token_id=token,
            pad_token_id=token,
            attn_implementation="eager",
        )
    with torch.device(device):
        model = cls(cfg)
    model = model.float().eval()
    B, S = shape["batch"]
    ids = torch.randint(0, shape["vocab"], (B, S), generator=torch.Generator().manual_seed(1)).to(device)
    return model, {"input_ids": ids, "labels": ids}


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----- measuring (inside a child) ----------------------------------------------------------------------------
class Ctx:
    """What a method needs: the model, the batch, the device, the spec, and a clock that syncs CUDA."""

    def __init__(self, spec: dict, model, batch):
        import torch

        self.spec, self.model, self.batch = spec, model, batch
        self.ids = batch["input_ids"]
        self.device = spec["device"]
        self.cuda = self.device.startswith("cuda")
        self.torch = torch

    def gen(self, seed: int):
        return self.torch.Generator(self.device).manual_seed(seed)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def clock(self, fn):
        """``(fn(), wall s, CPU s)``."""
        self.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        return out, time.perf_counter() - t0, time.process_time() - c0

    def measured(self):
        return Meter(self)


class Meter:
    """Context manager: wall and CPU time of its body, peak memory added and absolute (RSS, or CUDA allocated)."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.result: dict = {}

    def _mib(self) -> float:
        if self.ctx.cuda:
            return self.ctx.torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    def __enter__(self):
        self.ctx.sync()
        if self.ctx.cuda:
            self.ctx.torch.cuda.reset_peak_memory_stats()
            self.before = self.ctx.torch.cuda.memory_allocated() / 2**20
        else:
            self.before = self._mib()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.ctx.sync()
        peak = self._mib()
        self.result = {
            "wall_s": time.perf_counter() - self.t0,
            "cpu_s": time.process_time() - self.c0,
            "peak_added_mib": peak - self.before,
            "peak_mib": peak,
            "memory": "CUDA allocated" if self.ctx.cuda else "RSS",
        }
        return False


def progress(label: str, seconds: float = 10.0):
    """A product counter ``tick(k)`` that logs the count and the elapsed time at most every ``seconds``."""
    t0 = time.perf_counter()
    state = {"n": 0, "logged": t0}

    def tick(k: int = 1) -> None:
        state["n"] += k
        now = time.perf_counter()
        if now - state["logged"] >= seconds:
            state["logged"] = now
            log(f"    {label}: {state['n']} products, {now - t0:.0f} s")

    tick.state = state
    return tick


def count_ours(H, label: str):
    """Log progress of an operator of ours (wraps its ``matmat`` on the instance)."""
    tick, matmat = progress(label), H.matmat

    def counted(V):
        tick(V.shape[1])
        return matmat(V)

    H.matmat = counted
    return H


# ----- row: hvp ----------------------------------------------------------------------------------------------
def rayleigh(hv: list, v: list) -> float:
    num = sum(float((a.double() * b.double()).sum()) for a, b in zip(hv, v, strict=True))
    return num / sum(float(b.double().pow(2).sum()) for b in v)


def hvp_plain(ctx: Ctx) -> dict:
    from landscape import lm_loss

    torch = ctx.torch
    params = [p for p in ctx.model.parameters()]
    gen = ctx.gen(7)
    v = [torch.randn(p.shape, generator=gen, device=ctx.device) for p in params]
    times = []
    with ctx.measured() as m:

        def graph():
            loss = lm_loss(ctx.model(input_ids=ctx.ids).logits, ctx.ids)
            return torch.autograd.grad(loss, params, create_graph=True)

        g, setup_s, setup_cpu = ctx.clock(graph)
        for r in range(1 + ctx.spec["repeats"]):
            _, wall, cpu = ctx.clock(lambda: torch.autograd.grad(g, params, v, retain_graph=True))
            times.append((wall, cpu))
            log(f"    product {r + 1}: {wall:.3f} s")
    gd = [x.detach() for x in g]
    check = rayleigh(torch.autograd.grad(g, params, gd, retain_graph=True), gd)
    return {
        **m.result,
        "setup_s": setup_s,
        "setup_cpu_s": setup_cpu,
        **product_times(times),
        "params": sum(p.numel() for p in params),
        "rayleigh_gradient": check,
    }


def product_times(times: list[tuple[float, float]]) -> dict:
    later = times[1:] or times
    return {
        "first_s": times[0][0],
        "first_cpu_s": times[0][1],
        "product_s": statistics.median(w for w, _ in later),
        "product_cpu_s": statistics.median(c for _, c in later),
        "products_timed": len(later),
    }


def hvp_ours(ctx: Ctx) -> dict:
    from tscope_widgets import HessianOperator

    torch = ctx.torch
    method = ctx.spec["method"]
    kwargs = {}
    if method == "ours_block":
        kwargs["groups"] = block_groups(ctx, "attn", 5)
    elif method == "ours_fd":
        kwargs["route"] = "finite_difference"
    elif method == "ours_ggn":
        kwargs["kind"] = "ggn"
    v_full = torch.randn(num_params(ctx.model), generator=ctx.gen(7), device=ctx.device)
    times = []
    with ctx.measured() as m:
        try:
            H, setup_s, setup_cpu = ctx.clock(lambda: HessianOperator(ctx.model, ctx.batch, **kwargs))
        except ValueError as e:  # e.g. a route the operator does not offer
            return {"not_available": f"ValueError: {e}"}
        v = v_full[: H.shape[1]]
        for r in range(1 + ctx.spec["repeats"]):
            _, wall, cpu = ctx.clock(lambda: H @ v)
            times.append((wall, cpu))
            log(f"    product {r + 1}: {wall:.3f} s")
    out = {
        **m.result,
        "setup_s": setup_s,
        "setup_cpu_s": setup_cpu,
        **product_times(times),
        "params": H.shape[1],
        "groups": kwargs.get("groups"),
        "route": getattr(H, "route", None),
    }
    if method in ("ours", "ours_fd"):
        g = H.gradient()
        out["rayleigh_gradient"] = rayleigh([H @ g], [g])
    return out


def block_groups(ctx: Ctx, part: str, block: int) -> str:
    n_layer = ctx.spec["shape"]["n_layer"]
    return f"block{min(block, n_layer - 1)}.{part}.*"


# ----- row: lambda -------------------------------------------------------------------------------------------
def lambda_ours(ctx: Ctx) -> dict:
    """lanczos(H, k=1, tol, criterion="eigenvalue") timed, continued untimed to the residual test for a reference.

    Both criteria run the same iterations, so one run gives both: the result and time of
    ``criterion="eigenvalue"`` are those of the first step whose error estimate passes (exactly what
    ``lanczos(..., criterion="eigenvalue")`` returns, at the same wall time), and the run goes on until the Ritz
    residual is below tol·λ, whose Ritz value (error about residual²/gap, far below tol) is the reference
    every method's λ is compared with. Peak memory is that of the longer run.
    """
    from tscope_widgets import HessianOperator, lanczos
    from tscope_widgets.kernels.lanczos import iter_lanczos

    trajectory = []  # (products, seconds, Ritz value, error estimate, residual, full passes) after each step
    stop = None
    with ctx.measured() as m:
        start = time.perf_counter()
        H = count_ours(HessianOperator(ctx.model, ctx.batch), "ours lanczos")
        try:
            for r in iter_lanczos(H, k=1, tol=LAMBDA_TOL, generator=ctx.gen(0)):
                value = float(r.eigenvalues[-1])
                trajectory.append((r.num_matvecs, time.perf_counter() - start, value,
                                   float(r.error_estimates[-1]), float(r.residual_norms[-1]),
                                   r.reorthogonalized_steps))
                if stop is None and r.error_estimates[-1] <= LAMBDA_TOL * abs(value):
                    stop = trajectory[-1]
            refused = None
        except MemoryError as e:  # the basis of the continuation did not fit: the last Ritz value is the reference
            refused = str(e).splitlines()[0][:200]
    reference = trajectory[-1][2]
    stop = stop or trajectory[-1]
    extra = {"reference": reference, "reference_products": trajectory[-1][0], "reference_s": trajectory[-1][1],
             "reference_converged": refused is None and r.converged, "reference_error_estimate": trajectory[-1][3],
             "reference_refused": refused, "trajectory": trajectory, "full_passes": stop[5]}
    try:  # untimed: the other end of the spectrum, to tell which eigenvalue a power iteration finds
        if H.shape[0] > LAMBDA_MIN_MAX_PARAMS:
            raise RuntimeError(f"skipped above {LAMBDA_MIN_MAX_PARAMS:,} parameters (minutes of products)")
        low = lanczos(H, k=1, which="smallest", tol=LAMBDA_TOL, generator=ctx.gen(1))
        extra.update(lambda_min=float(low.eigenvalues[0]), lambda_min_products=low.num_matvecs)
    except (RuntimeError, MemoryError) as e:
        extra["lambda_min_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return {
        **m.result,
        **extra,
        "wall_s": stop[1],
        "lambda": stop[2],
        "error_estimate": stop[3],
        "products": stop[0],
        "converged": stop[3] <= LAMBDA_TOL * abs(stop[2]),
        "params": H.shape[0],
    }


LAMBDA_MIN_MAX_PARAMS = 10_000_000


def lambda_pyhessian(ctx: Ctx) -> dict:
    import pyhessian
    from curvature import Logits

    module = sys.modules["pyhessian.hessian"]  # counts the products it makes
    original, tick = module.hessian_vector_product, progress("pyhessian power iteration")

    def counted(gradsH, params, v):
        tick()
        return original(gradsH, params, v)

    module.hessian_vector_product = counted
    # its constructor calls loss.backward(create_graph=True), which torch warns about (a reference cycle)
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    net, crit = Logits.make(ctx.model)
    ctx.torch.manual_seed(0)  # it draws its start vector from the global generator
    with ctx.measured() as m:
        h = pyhessian.hessian(net, crit, data=(ctx.ids, ctx.batch["labels"]), cuda=ctx.cuda)
        values, _ = h.eigenvalues(top_n=1, tol=ctx.spec.get("tol", LAMBDA_TOL))
    n = tick.state["n"]
    return {**m.result, "lambda": float(values[0]), "products": n, "hit_max_iter": n >= 100,
            "tol": ctx.spec.get("tol", LAMBDA_TOL)}


def he_operator(ctx: Ctx, tick):
    import hessian_eigenthings as he
    from curvature import Logits

    net, crit = Logits.make(ctx.model)
    op = he.HessianOperator(net, [(ctx.ids, ctx.batch["labels"])], lambda mod, b: crit(mod(b[0]), b[1]))
    matvec = op.matvec

    def counted(v):
        tick()
        return matvec(v)

    op.matvec = counted
    return op


def he_lanczos(op, max_iter: int):
    import hessian_eigenthings as he

    return he.lanczos(op, k=1, which="LA", tol=LAMBDA_TOL, max_iter=max_iter, seed=0)


def lambda_he_search(ctx: Ctx) -> dict:
    """The smallest max_iter in HE_MAX_ITERS whose result the package reports converged (not timed)."""
    tick = progress("hessian-eigenthings search")
    for m in HE_MAX_ITERS:
        r = he_lanczos(he_operator(ctx, tick), m)
        log(f"    max_iter {m}: lambda {float(r.eigenvalues[0]):.6g}, converged {bool(r.converged.all())}")
        if bool(r.converged.all()):
            return {"max_iter": m, "search_products": tick.state["n"], "search_converged": True}
    return {"max_iter": m, "search_products": tick.state["n"], "search_converged": False}


def lambda_he(ctx: Ctx) -> dict:
    tick = progress("hessian-eigenthings lanczos")
    with ctx.measured() as m:
        r = he_lanczos(he_operator(ctx, tick), ctx.spec["max_iter"])
    return {
        **m.result,
        "lambda": float(r.eigenvalues[0]),
        "products": tick.state["n"],
        "converged": bool(r.converged.all()),
        "max_iter": ctx.spec["max_iter"],
    }


# ----- rows: trace, slq --------------------------------------------------------------------------------------
def trace_ours(ctx: Ctx) -> dict:
    from tscope_widgets import HessianOperator, hutchpp_trace

    m_products = ctx.spec["trace_products"]
    P = num_params(ctx.model)
    log(
        f"    Hutch++ keeps {m_products // 3} vectors of {P:,} floats: >= "
        f"{(m_products // 3) * P * 4 / 2**30:.1f} GiB"
    )
    with ctx.measured() as m:
        H = count_ours(HessianOperator(ctx.model, ctx.batch), "ours hutch++")
        est = hutchpp_trace(H, m_products, generator=ctx.gen(0))
    return {**m.result, "value": est.value, "stderr": est.stderr, "products": est.num_matvecs}


def slq_ours(ctx: Ctx) -> dict:
    from tscope_widgets import HessianOperator, slq_density

    groups = ctx.spec["groups"]
    with ctx.measured() as m:
        H = count_ours(HessianOperator(ctx.model, ctx.batch, groups=groups), f"ours slq {groups}")
        d = slq_density(H, num_probes=SLQ_PROBES, num_steps=SLQ_STEPS, generator=ctx.gen(0))
    return {
        **m.result,
        "groups": groups,
        "params": H.shape[0],
        "products": d.num_matvecs,
        "node_min": float(d.nodes.min()),
        "node_max": float(d.nodes.max()),
    }


# ----- row: landscape ----------------------------------------------------------------------------------------
def landscape_method(ctx: Ctx) -> dict:
    from landscape import make_method

    run = make_method(ctx.spec["method"], ctx.model, ctx.ids, GRID, ctx.device)
    with ctx.measured() as m:  # the cold run: memory, and the first time
        grid = run()
    walls, cpus = [], []
    for r in range(ctx.spec["landscape_repeats"]):
        grid, wall, cpu = ctx.clock(run)
        walls.append(wall)
        cpus.append(cpu)
        log(f"    repeat {r + 1}: {wall:.2f} s")
    return {
        **m.result,
        "first_s": m.result["wall_s"],
        "grid_s": statistics.median(walls or [m.result["wall_s"]]),
        "grid_cpu_s": statistics.median(cpus or [m.result["cpu_s"]]),
        "grid": grid,
        "points": GRID * GRID,
    }


# ----- row: sens ---------------------------------------------------------------------------------------------
def sensitivity_loop(ctx: Ctx, ids, cotangents, mean: bool):
    """``run(samples) -> [n, S, S]``: per sample, per output position i, one autograd.grad per cotangent of h_i.

    ``cotangents(H) -> [K, H]``; the squared gradients are summed over them (``mean``: averaged, Hutchinson).
    """
    from tscope_widgets import adapt

    torch = ctx.torch
    user = adapt(ctx.model)  # the adapter over the user's model: no copy, no replaced modules
    last = user.num_layers - 1
    with torch.no_grad():
        e_all = user.embed(ids).detach()
    S = ids.shape[1]

    def run(samples):
        out = torch.zeros(len(samples), S, S, device=ctx.device)
        for k, b in enumerate(samples):
            e = e_all[b].clone().requires_grad_(True)
            h = user.forward_from_embeddings(e[None], None, layers=[last])[last][0]  # [S, H]
            for i in range(S):
                vs = cotangents(h.shape[1])
                for v in vs:
                    (g,) = torch.autograd.grad(h[i], e, v, retain_graph=True)
                    out[k, i] += g.pow(2).sum(-1)
                if mean:
                    out[k, i] /= vs.shape[0]
        return out

    return run


def sens_method(ctx: Ctx) -> dict:
    from tscope_widgets import position_sensitivity

    torch, method = ctx.torch, ctx.spec["method"]
    exact = method.endswith("exact")
    S = SENS["exact_seq"] if exact else SENS["hutch_seq"]
    ids = ctx.ids[: SENS["batch"], :S]
    B = ids.shape[0]
    if method.startswith("ours"):
        kwargs = (
            dict(layers=[-1], method="exact")
            if exact
            else dict(
                layers=[-1], method="hutchinson", probes=SENS["probes"], generator=torch.Generator().manual_seed(0)
            )
        )

        def run_on(x):
            return position_sensitivity(ctx.model, x, **kwargs)[-1]

        def run(samples):
            return run_on(ids[samples])

        warm = lambda: run_on(ids[:1, :2])  # noqa: E731
        samples = list(range(B))
    else:
        gen = torch.Generator().manual_seed(0)

        def cotangents(H):
            if exact:
                return torch.eye(H, device=ctx.device)
            return (torch.randint(0, 2, (SENS["probes"], H), generator=gen).float() * 2 - 1).to(ctx.device)

        run = sensitivity_loop(ctx, ids, cotangents, mean=not exact)
        warm = lambda: sensitivity_loop(ctx, ids[:1, :2], cotangents, not exact)([0])  # noqa: E731
        n = ctx.spec.get("sens_samples") or B
        samples = list(range(min(n, B)))
    warm()
    with ctx.measured() as m:
        out = run(samples)
    scale = B / len(samples)
    return {
        **m.result,
        "wall_s": m.result["wall_s"] * scale,
        "cpu_s": m.result["cpu_s"] * scale,
        "timed_wall_s": m.result["wall_s"],
        "samples_timed": len(samples),
        "samples": B,
        "seq": S,
        "values": out.detach().double().cpu().tolist(),
    }


# ----- child dispatch ----------------------------------------------------------------------------------------
CHILDREN = {
    ("hvp", "plain"): hvp_plain,
    **{("hvp", m): hvp_ours for m in ("ours", "ours_block", "ours_fd", "ours_ggn")},
    ("lambda", "ours"): lambda_ours,
    ("lambda", "pyhessian"): lambda_pyhessian,
    ("lambda", "pyhessian_tight"): lambda_pyhessian,
    ("lambda", "he_search"): lambda_he_search,
    ("lambda", "he"): lambda_he,
    ("trace", "ours"): trace_ours,
    ("slq", "ours"): slq_ours,
    **{("landscape", m): landscape_method for m in METHODS["landscape"]},
    **{("sens", m): sens_method for m in METHODS["sens"]},
}


def child(spec: dict) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    if spec["device"] == "cpu" and spec.get("mem_limit_gb"):
        limit = int(spec["mem_limit_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    model, batch = build(spec["shape"], spec["device"])
    row = {k: spec[k] for k in ("row", "size", "method")}
    row.update(threads=torch.get_num_threads(), total_params=num_params(model))
    try:
        row.update(CHILDREN[spec["row"], spec["method"]](Ctx(spec, model, batch)))
    except (RuntimeError, MemoryError) as e:  # an allocation failure under the memory limit is a result
        msg = str(e)
        oom = "can't allocate memory" in msg or "out of memory" in msg.lower() or isinstance(e, MemoryError)
        first = next((line for line in msg.splitlines() if line.strip()), "")
        row["error"] = (f"out of memory (limit {spec.get('mem_limit_gb') or 'none'} GB): " if oom else "") + (
            f"{type(e).__name__}: {first[:240]}"
        )
    return row


# ----- report ------------------------------------------------------------------------------------------------
def fmt(x, spec: str = ".3f", missing: str = "-") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    return format(x, spec)


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def find(rows: list[dict], row: str, method: str, size: str = "small") -> dict | None:
    r = next((r for r in rows if r["row"] == row and r["method"] == method and r["size"] == size), None)
    return r if r and "error" not in r and "not_available" not in r else None


def failed(r: dict) -> str | None:
    return r.get("error") or (f"not available ({r['not_available']})" if "not_available" in r else None)


def mem(r: dict) -> tuple[str, str]:
    return fmt(r.get("peak_added_mib"), ".0f"), fmt(r.get("peak_mib"), ".0f")


def table_hvp(rows: list[dict]) -> list[str]:
    out = [
        "| size | method | parameters | setup (s) | first product (s) | later product wall / CPU (s) "
        "| product / plain (wall / CPU) | peak added / peak (MiB) | peak added / plain "
        "| gᵀHg/gᵀg (rel. diff vs plain) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["row"] == "hvp"):
        label = LABELS["hvp", r["method"]] + (f" `{r['groups']}`" if r.get("groups") else "")
        if failed(r):
            out.append(f"| {r['size']} | {label} | | {failed(r)} | | | | | | |")
            continue
        plain = find(rows, "hvp", "plain", r["size"])
        added, peak = mem(r)
        rq = r.get("rayleigh_gradient")
        check = "-"
        if rq is not None:
            check = f"{rq:.6g}"
            if plain and r["method"] != "plain":
                check += f" ({abs(rq - plain['rayleigh_gradient']) / abs(plain['rayleigh_gradient']):.1e})"
        ratios = "-"
        if plain and r["method"] != "plain":
            ratios = (
                f"{fmt(ratio(r['product_s'], plain['product_s']), '.2f')}x / "
                f"{fmt(ratio(r['product_cpu_s'], plain['product_cpu_s']), '.2f')}x"
            )
        mem_ratio = fmt(
            ratio(r["peak_added_mib"], plain["peak_added_mib"]) if plain and r["method"] != "plain" else None, ".2f"
        )
        out.append(
            f"| {r['size']} | {label} | {r['params']:,} | {fmt(r['setup_s'])} | {fmt(r['first_s'])} "
            f"| {fmt(r['product_s'])} / {fmt(r['product_cpu_s'])} | {ratios} | {added} / {peak} "
            f"| {mem_ratio + ('x' if mem_ratio != '-' else '')} | {check} |"
        )
    return out


def lambda_error(r: dict, ours: dict | None) -> float | None:
    """Relative distance of a method's λ from the reference (ours, continued to residual <= tol·λ)."""
    if not ours or "reference" not in ours or failed(r):
        return None
    return abs(r["lambda"] - ours["reference"]) / abs(ours["reference"])


def lambda_peers(rows: list[dict]) -> list[dict]:
    return [r for m in ("pyhessian", "pyhessian_tight", "he") if (r := find(rows, "lambda", m)) and not failed(r)]


def table_lambda(rows: list[dict]) -> list[str]:
    out = [
        "| method | λ_max | error vs reference | products | wall (s) | wall / fastest peer "
        "| peak added / peak (MiB) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ours = find(rows, "lambda", "ours")
    peers = lambda_peers(rows)
    fastest = min(peers, key=lambda r: r["wall_s"]) if peers else None
    for r in (r for r in rows if r["row"] == "lambda" and r["method"] != "he_search"):
        label = LABELS["lambda", r["method"]]
        if failed(r):
            out.append(f"| {label} | {failed(r)} | | | | | | |")
            continue
        note = ""
        low = ours.get("lambda_min") if ours else None
        if r["method"] == "ours":
            note = (f"{'converged' if r['converged'] else 'NOT converged'} (error estimate min(r, r²/gap) = "
                    f"{r['error_estimate'] / abs(r['lambda']):.1e}·λ); reference λ = {r['reference']:.7g} after "
                    f"{r['reference_products']} products, {r['reference_s']:.0f} s (residual ≤ 1e-3·λ, "
                    f"{'converged' if r['reference_converged'] else 'NOT converged'}; the same run continued; "
                    f"its error estimate {r['reference_error_estimate'] / abs(r['reference']):.1e}·λ)")
            if r.get("reference_refused"):
                note += f"; continuation stopped: {r['reference_refused']}"
            if low is not None:
                note += f"; λ_min = {low:.6g} (untimed, {r['lambda_min_products']} more products)"
            elif "lambda_min_error" in r:
                note += f"; λ_min failed: {r['lambda_min_error']}"
        elif r["method"].startswith("pyhessian"):
            note = "stopped at maxIter=100" if r["hit_max_iter"] else f"stopped: relative change < {r['tol']:g}"
            if low is not None and abs(low) > abs(ours["lambda"]):
                note += "; power iteration tends to the largest \\|λ\\|, here λ_min"
        elif r["method"] == "he":
            note = (
                f"max_iter={r['max_iter']} ({'converged' if r['converged'] else 'NOT converged'}); "
                f"search: {r.get('search_products', '?')} products, untimed"
            )
        added, peak = mem(r)
        out.append(
            f"| {label} | {r['lambda']:.7g} | {fmt(lambda_error(r, ours), '.1e')} | {r['products']} "
            f"| {fmt(r['wall_s'], '.2f')} "
            f"| {fmt(ratio(r['wall_s'], fastest['wall_s']) if fastest else None, '.2f')} "
            f"| {added} / {peak} | {note} |"
        )
    return out


def table_trace(rows: list[dict]) -> list[str]:
    out = [
        "| method | estimate | stderr | products | wall (s) | CPU (s) | peak added / peak (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["row"] == "trace"):
        if failed(r):
            out.append(f"| ours hutchpp_trace | {failed(r)} | | | | | |")
            continue
        added, peak = mem(r)
        out.append(
            f"| ours hutchpp_trace | {r['value']:.6g} | {r['stderr']:.3g} | {r['products']} "
            f"| {fmt(r['wall_s'], '.2f')} | {fmt(r['cpu_s'], '.2f')} | {added} / {peak} |"
        )
    return out


def table_slq(rows: list[dict]) -> list[str]:
    out = [
        "| groups | parameters | probes x steps | products | wall (s) | CPU (s) | Ritz nodes [min, max] "
        "| peak added / peak (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["row"] == "slq"):
        if failed(r):
            out.append(f"| `{r.get('groups', '?')}` | {failed(r)} | | | | | | |")
            continue
        added, peak = mem(r)
        out.append(
            f"| `{r['groups']}` | {r['params']:,} | {SLQ_PROBES} x {SLQ_STEPS} | {r['products']} "
            f"| {fmt(r['wall_s'], '.2f')} | {fmt(r['cpu_s'], '.2f')} | [{r['node_min']:.4g}, {r['node_max']:.4g}] "
            f"| {added} / {peak} |"
        )
    return out


def grid_diff(a: dict, b: dict | None) -> float | None:
    if not b:
        return None
    return max(abs(x - y) for ra, rb in zip(a["grid"], b["grid"], strict=True) for x, y in zip(ra, rb, strict=True))


def table_landscape(rows: list[dict]) -> list[str]:
    out = [
        "| size | method | first run (s) | grid wall / CPU (s) | per point (ms) | wall / bare | wall / plain "
        "| peak added / peak (MiB) | max abs. loss diff vs plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["row"] == "landscape"):
        label = LABELS["landscape", r["method"]]
        if failed(r):
            out.append(f"| {r['size']} | {label} | {failed(r)} | | | | | | |")
            continue
        plain, bare = (find(rows, "landscape", m, r["size"]) for m in ("plain", "bare"))
        added, peak = mem(r)
        diff = grid_diff(r, plain) if r["method"] == "ours" else None
        out.append(
            f"| {r['size']} | {label} | {fmt(r['first_s'], '.2f')} | {fmt(r['grid_s'], '.2f')} / "
            f"{fmt(r['grid_cpu_s'], '.2f')} | {fmt(1000 * r['grid_s'] / r['points'], '.0f')} "
            f"| {fmt(ratio(r['grid_s'], bare['grid_s']) if bare and not failed(bare) else None, '.2f')} "
            f"| {fmt(ratio(r['grid_s'], plain['grid_s']) if plain and not failed(plain) else None, '.2f')} "
            f"| {added} / {peak} | {fmt(diff, '.1e')} |"
        )
    return out


def sens_diff(a: dict | None, b: dict | None, kind: str) -> float | None:
    """Relative difference of two maps on the samples both computed (max-abs or Frobenius)."""
    import torch

    if not a or not b:
        return None
    n = min(a["samples_timed"], b["samples_timed"])
    x, y = torch.tensor(a["values"][:n]), torch.tensor(b["values"][:n])
    if kind == "max":
        return float((x - y).abs().max() / y.abs().max())
    return float((x - y).norm() / y.norm())


def table_sens(rows: list[dict]) -> list[str]:
    out = [
        "| method | B x S | samples timed | wall (s) | CPU (s) | loop / ours (wall / CPU) "
        "| peak added / peak (MiB) | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["row"] == "sens"):
        label = LABELS["sens", r["method"]]
        if failed(r):
            out.append(f"| {label} | {failed(r)} | | | | | | |")
            continue
        kind = "exact" if r["method"].endswith("exact") else "hutch"
        ours = find(rows, "sens", f"ours_{kind}")
        timed = f"{r['samples_timed']}/{r['samples']}" + (
            " (extrapolated)" if r["samples_timed"] < r["samples"] else ""
        )
        ratios, check = "-", "-"
        if r["method"].startswith("loop") and ours:
            ratios = f"{r['wall_s'] / ours['wall_s']:.1f}x / {r['cpu_s'] / ours['cpu_s']:.1f}x"
            if kind == "exact":
                check = f"max rel. diff vs ours exact {fmt(sens_diff(r, ours, 'max'), '.1e')}"
            else:
                check = f"rel. Frobenius diff vs ours hutchinson {fmt(sens_diff(r, ours, 'fro'), '.2f')}"
        added, peak = mem(r)
        out.append(
            f"| {label} | {r['samples']} x {r['seq']} | {timed} | {fmt(r['wall_s'], '.2f')} "
            f"| {fmt(r['cpu_s'], '.2f')} | {ratios} | {added} / {peak} | {check} |"
        )
    return out


TABLES = {  # row: (title, note under the title, table)
    "hvp": (
        "Hessian-vector product",
        "Setup: plain = forward and gradient with create_graph=True; ours = the constructor (its first product "
        "builds the gradient graph). Later products: median; ratios against plain of the same size.",
        table_hvp,
    ),
    "lambda": (
        "λ_max to 1e-3 relative (small)",
        "One timed run each, the operator's construction included; products = Hessian-vector products.",
        table_lambda,
    ),
    "trace": ("Hutch++ trace (small)", "One timed run, the operator's construction included.", table_trace),
    "slq": (
        f"SLQ density, {SLQ_PROBES} probes x {SLQ_STEPS} steps, per block (small)",
        "One operator per block (groups=), each in its own process.",
        table_slq,
    ),
    "landscape": (
        f"{GRID} x {GRID} loss landscape",
        "Memory from the first (cold) run; grid time = median of the later runs.",
        table_landscape,
    ),
    "sens": (
        "Position sensitivity, last block (small)",
        "After a warm-up on 1 sample x 2 tokens, one measured run; a loop timed on fewer samples than the batch is "
        "extrapolated linearly (wall and CPU).",
        table_sens,
    ),
}


def verdict(x: float | None, target: float, below: bool = True) -> str:
    if x is None:
        return "not measured"
    return "met" if (x <= target if below else x >= target) else "MISSED"


def summary(rows: list[dict], sizes: list[str]) -> list[str]:
    out = []
    for size in sizes:
        plain, ours, block = (find(rows, "hvp", m, size) for m in ("plain", "ours", "ours_block"))
        if plain and ours:
            w, c = ratio(ours["product_s"], plain["product_s"]), ratio(ours["product_cpu_s"], plain["product_cpu_s"])
            mr = ratio(ours["peak_added_mib"], plain["peak_added_mib"])
            out.append(
                f"HVP product ({size}): ours / plain = {w:.2f}x wall, {c:.2f}x CPU "
                f"({verdict(w, TARGETS['product'])}, target <= {TARGETS['product']}x); "
                f"peak memory added {fmt(mr, '.2f')}x ({verdict(mr, TARGETS['memory'])}, "
                f"target <= {TARGETS['memory']}x)"
            )
        if block and ours:
            out.append(
                f"one block's attention ({size}): {block['product_s']:.3f} s vs {ours['product_s']:.3f} s for "
                f"the whole model ({'cheaper' if block['product_s'] < ours['product_s'] else 'NOT cheaper'})"
            )
    ours = find(rows, "lambda", "ours")
    peers = lambda_peers(rows)
    if ours and not failed(ours) and peers:
        fastest = min(peers, key=lambda r: r["wall_s"])
        x = ours["wall_s"] / fastest["wall_s"]
        errors = ", ".join(f"{r['method']} {fmt(lambda_error(r, ours), '.1e')}" for r in [ours, *peers])
        line = (
            f"λ_max: ours / fastest peer ({fastest['method']}, whatever its accuracy) = {x:.2f}x wall "
            f"({verdict(x, TARGETS['lambda_vs_peer'])}, target <= {TARGETS['lambda_vs_peer']}x)"
        )
        if accurate := [r for r in peers if (e := lambda_error(r, ours)) is not None and e <= LAMBDA_TOL]:
            best = min(accurate, key=lambda r: r["wall_s"])
            line += f"; vs the fastest peer within 1e-3 of the reference ({best['method']}): " \
                    f"{ours['wall_s'] / best['wall_s']:.2f}x"
        else:
            line += "; no peer came within 1e-3 of the reference"
        out.append(f"{line}; relative error of each λ against the reference: {errors}")
    for size in sizes:
        bare, ours = find(rows, "landscape", "bare", size), find(rows, "landscape", "ours", size)
        if bare and ours and not failed(bare) and not failed(ours):
            x = ours["grid_s"] / bare["grid_s"]
            out.append(
                f"landscape ({size}): ours / bare forwards = {x:.2f}x wall ({verdict(x, TARGETS['landscape'])}, "
                f"target <= {TARGETS['landscape']}x)"
            )
    for kind in ("hutch", "exact"):
        loop, ours = find(rows, "sens", f"loop_{kind}"), find(rows, "sens", f"ours_{kind}")
        if loop and ours:
            x = loop["wall_s"] / ours["wall_s"]
            note = " (loop extrapolated from a subset of samples)" if loop["samples_timed"] < loop["samples"] else ""
            out.append(
                f"sensitivity {kind}: loop / ours = {x:.1f}x wall ({verdict(x, TARGETS['sens'], below=False)}, "
                f"target >= {TARGETS['sens']}x){note}"
            )
    return [f"- {line}" for line in out]


def report(rows: list[dict], env: dict, row_names: list[str], sizes: list[str]) -> str:
    memory = (
        'torch.cuda.max_memory_allocated, peak minus the allocation before the measured part ("peak added")'
        if env["device"] != "cpu"
        else 'ru_maxrss after minus before the measured part ("peak added") and ru_maxrss ("peak")'
    )
    parts = [
        f"Threads {env['threads']}, device {env['device']}, torch {env['torch']}, transformers "
        f"{env['transformers']}, pyhessian {env['pyhessian']}, hessian-eigenthings {env['hessian-eigenthings']}; "
        f"load average {env['load_average_start'][0]:.1f} at the start, {env['load_average_end'][0]:.1f} at the end. "
        f"Memory: {memory}; every method in its own process."
    ]
    for name in row_names:
        title, note, fn = TABLES[name]
        parts.append(f"\n### {title}\n\n{note}\n\n" + "\n".join(fn(rows)))
    parts.append("\n### Against the targets\n\n" + "\n".join(summary(rows, sizes)))
    return "\n".join(parts)


# ----- main --------------------------------------------------------------------------------------------------
def mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def plan(row_names: list[str], sizes: list[str]) -> list[dict]:
    """One entry per child: row, size, method (and the slq groups)."""
    out = []
    for row in row_names:
        for size in sizes if row in MULTI_SIZE_ROWS else [s for s in sizes if s == "small"]:
            for method in METHODS[row]:
                if row == "slq":
                    out += [{"row": row, "size": size, "method": method, "part": p} for p in ("attn", "mlp")]
                elif row == "lambda" and method == "he":
                    out += [
                        {"row": row, "size": size, "method": "he_search"},
                        {"row": row, "size": size, "method": "he"},
                    ]
                elif method == "pyhessian_tight":
                    out.append({"row": row, "size": size, "method": method, "tol": LAMBDA_TOL / 10})
                else:
                    out.append({"row": row, "size": size, "method": method})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument(
        "--sizes",
        default=None,
        help="comma-separated: small, medium, qwen2-1.5b (default: small,medium; "
        "--gpu adds qwen2-1.5b; --quick: small)",
    )
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of the methods of the chosen rows (default: all), e.g. ours,plain")
    p.add_argument("--threads", default="1", help="1 or all (os.cpu_count())")
    p.add_argument("--repeats", type=int, default=None, help="later products timed per HVP method (5; --quick 3)")
    p.add_argument(
        "--landscape-repeats", type=int, default=None, help="warm grid runs after the cold one (3; --quick 1)"
    )
    p.add_argument("--trace-products", type=int, default=100)
    p.add_argument("--he-max-iter", type=int, default=None,
                   help="hessian-eigenthings' max_iter without the (untimed, at 124M half-hour) search")
    p.add_argument(
        "--sens-samples",
        type=int,
        default=None,
        help="samples the sensitivity loops are timed on (default: all 2), extrapolated linearly to the batch",
    )
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=None,
        help="RLIMIT_DATA of each CPU child (default 90%% of MemAvailable; 0 = none)",
    )
    p.add_argument("--gpu", action="store_true", help="run on CUDA; adds qwen2-1.5b to hvp and landscape")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny 'small', no 'medium', fewer repeats")
    p.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    row_names = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := sorted(set(row_names) - set(ROWS)):
        p.error(f"unknown rows {unknown}; choose from {ROWS}")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.sizes:
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    else:
        sizes = (["small"] if args.quick else ["small", "medium"]) + (["qwen2-1.5b"] if args.gpu else [])
    if unknown := [s for s in sizes if s not in shapes]:
        p.error(f"sizes {unknown} not available{' with --quick' if args.quick else ''}; choose from {list(shapes)}")
    if "qwen2-1.5b" in sizes and not args.gpu:
        p.error("qwen2-1.5b runs with --gpu only")
    threads = os.cpu_count() if args.threads == "all" else int(args.threads)
    os.environ["BENCH_THREADS"] = str(threads)  # recorded by environment()
    device = "cuda" if args.gpu else "cpu"
    env = environment("pyhessian", "hessian-eigenthings", default_threads=threads)
    if args.gpu and env["cuda"] is None:
        raise SystemExit("--gpu needs CUDA, and torch.cuda.is_available() is False on this machine")
    env["device"] = env["cuda"] or "cpu"
    mem_limit = (
        None
        if args.gpu
        else (args.mem_limit_gb if args.mem_limit_gb is not None else round(0.9 * mem_available_gb(), 1))
    )
    env["mem_limit_gb"] = mem_limit
    log(f"environment: {env}")
    common = {
        "device": device,
        "threads": threads,
        "mem_limit_gb": mem_limit,
        "repeats": args.repeats if args.repeats is not None else (3 if args.quick else 5),
        "landscape_repeats": args.landscape_repeats if args.landscape_repeats is not None else (1 if args.quick else 3),
        "trace_products": args.trace_products,
        "sens_samples": args.sens_samples,
    }
    rows, he_search = [], {}
    todo = plan(row_names, sizes)
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(",") if m.strip()}
        todo = [e for e in todo if e["method"] in wanted or (e["method"] == "he_search" and "he" in wanted)]
    if "small" not in sizes and set(row_names) - MULTI_SIZE_ROWS:
        log(f"rows {sorted(set(row_names) - MULTI_SIZE_ROWS)} run at size small only, which --sizes leaves out")
    t_start = time.perf_counter()
    for k, entry in enumerate(todo, 1):
        shape = shapes[entry["size"]]
        spec = {**common, **entry, "shape": shape}
        if entry["row"] == "slq":
            spec["groups"] = f"block{0 if entry['part'] == 'attn' else shape['n_layer'] - 1}.{entry['part']}.*"
        if entry["method"] == "he_search" and args.he_max_iter:
            he_search = {"max_iter": args.he_max_iter, "search_converged": True, "search_products": 0}
            log(f"[{k}/{len(todo)}] lambda {entry['size']} he_search: skipped, --he-max-iter {args.he_max_iter}")
            continue
        if entry["method"] == "he":
            if not he_search.get("search_converged"):
                why = he_search.get("error") or f"no max_iter up to {HE_MAX_ITERS[-1]} converged"
                log(f"[{k}/{len(todo)}] lambda {entry['size']} he: skipped ({why})")
                rows.append({**entry, "error": f"max_iter search: {why}"})
                continue
            spec["max_iter"] = he_search["max_iter"]
        label = f"[{k}/{len(todo)}] {entry['row']} {entry['size']} {entry['method']}" + (
            f" {spec['groups']}" if "groups" in spec else ""
        )
        log(f"{label}: running ({time.perf_counter() - t_start:.0f} s so far)")
        res = spawn(__file__, ["--child", json.dumps(spec)], pass_stderr=True)
        if res is None:
            res = {**entry, "error": "the subprocess failed (its stderr is above)"}
        if entry["method"] == "he_search":
            he_search = res
            continue
        if entry["method"] == "he":
            res.update({k2: he_search[k2] for k2 in ("search_products",) if k2 in he_search})
        rows.append(res)
        brief = failed(res) or ", ".join(
            f"{key} {res[key]:.4g}" for key in ("product_s", "lambda", "value", "grid_s", "wall_s") if key in res
        )
        log(f"{label}: {brief}")
    env["load_average_end"] = os.getloadavg()
    text = report(rows, env, row_names, sizes)
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(args.out_dir, f"scale-{stamp}")
    with open(base + ".md", "w") as f:
        f.write(text + "\n")
    with open(base + ".json", "w") as f:
        json.dump({"environment": env, "args": vars(args), "rows": rows}, f, indent=1)
    log(f"written: {base}.md, {base}.json ({time.perf_counter() - t_start:.0f} s in all)")


if __name__ == "__main__":
    main()
