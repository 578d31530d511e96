"""Benchmark: a 2D loss-landscape slice against the loss-landscapes package and a plain loop.

Model: a GPT-2-shaped config built offline (2 layers, d=64, 4 heads, MLP 256, vocab 512, eager
attention, transformers' own modules) at initialization, float32, eval mode. Data: one batch of
16 x 32 random tokens, labels = the inputs (next-token loss). Grid: 25 x 25 points,
alphas = betas = linspace(-1, 1, 25), along two Gaussian filter-normalized directions drawn by our
``random_direction`` (seeded, so every subprocess draws the same ones); every method below is fed
these same two directions, except ``ll_random`` which draws its own.

Methods (each in its own subprocess; times are medians over repeats after a 2 x 2 warm-up grid):
  bare      625 forward passes + loss of the same batch at theta, on the user's model (no parameter
            changes): the floor every method pays on a CPU
  bare_copy the same on our private analysis copy (``adapter.analysis``: eager attention, fused GELU),
            i.e. the forward passes ``slice_2d`` itself runs
  plain     set-parameters-and-evaluate: per grid point, ``p.copy_(p0 + a d1 + b d2)`` for every
            parameter under ``no_grad``, then a forward pass
  ll_plane  loss_landscapes.planar_interpolation(start, end1, end2, Loss(...), steps=n) with
            start = theta + a_0 d1 + b_0 d2 and end_k = start + n h d_k, h the grid step: the package's
            own grid loop, fed our directions
  ll_random loss_landscapes.random_plane(model, Loss(...), steps=n, normalization="filter"): what a
            user of the package calls (its own uniform random directions, so its values are not
            comparable; timed only). Its filter normalization needs the patch below.
  ours      tscope_widgets.kernels.landscape.slice_2d(model, batch, d1, d2, alphas, betas) with the
            default points_per_call (16 points per vmapped call on a CPU); the last snapshot is the grid
  ours_p1   the same with points_per_call=1 (one plain functional_call per point, no vmap)
With --gpu (CUDA only) every method also runs on the GPU, and ours with several grid points per
call evaluated at once (vmap over stacked parameters) is the row that matters there.

Grid agreement: each method's grid is compared with ours (max |difference|). loss-landscapes'
planar_interpolation / random_plane evaluate every other row one step off: rows 0, 2, 4, ... are taken
at beta steps 1..n, rows 1, 3, ... at 0..n-1 (its in-place walk adds the step before the first point of
an even row). Both differences are reported: against the documented grid, and against the points it
actually evaluates (even rows shifted by one column, last column of even rows dropped).

loss-landscapes 3.0.6 patch (documented monkeypatch, the model is not changed):
``ModelParameters.filter_normalize_`` rescales a one-dimensional parameter as a whole and then *also*
falls through to the per-"filter" loop, which for a vector takes each element as a filter and divides
by its absolute value. A zero-initialised bias (every GPT-2 bias at initialization) is first scaled to
zero by the whole-vector step, so the element loop divides 0.0 by 0.0: ZeroDivisionError. The patch
(``patched_filter_normalize_``) keeps the package's rules (whole-vector scaling for 1-D parameters,
dim-0 rows as filters otherwise) and skips the fall-through, giving a zero direction where the
reference filter is zero. The benchmark records that the unpatched method raises. (Its dim-0 rule takes
the *input* units of GPT-2's ``Conv1D`` weights ``[in, out]`` as filters; ours takes the output units.)

"The faster peer" is the fastest of plain, ll_plane and ll_random (the package's own call; same number
of forward passes, its own directions).

Install (loss-landscapes has no dependencies beyond numpy and torch; never let pip replace torch):
  .venv/bin/python -m pip install -c constraints.txt loss-landscapes==3.0.6
  .venv/bin/python -m pip show torch   # still 2.13.0
(or all benchmark peers at once with the --no-deps command in benchmarks/curvature.py; an install through
the ``bench`` extra pulls torchvision in with curvlinops' dependency backpack: uninstall it afterwards.)

Usage:
  python benchmarks/landscape.py [--n 25] [--repeats 3] [--json out.json] [--markdown out.md]
  python benchmarks/landscape.py --quick      # smoke run: 5 x 5 grid, 1 repeat
  python benchmarks/landscape.py --gpu        # also on CUDA (refused when CUDA is unavailable)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

from _harness import environment, spawn

METHODS = ["bare", "bare_copy", "plain", "ll_plane", "ll_random", "ours", "ours_p1"]
LABELS = {
    "bare": "n*n bare forward passes (user's model)",
    "bare_copy": "n*n bare forward passes (our analysis copy)",
    "plain": "plain set-parameters-and-evaluate loop",
    "ll_plane": "loss-landscapes planar_interpolation (our directions)",
    "ll_random": "loss-landscapes random_plane, filter norm. (own directions)",
    "ours": "ours slice_2d (default points_per_call)",
    "ours_p1": "ours slice_2d, points_per_call=1",
}
GRIDS = {"plain", "ll_plane", "ours", "ours_p1"}  # methods that evaluate our grid (compared with ours)
SEQ, BATCH, D_MODEL, N_LAYER, N_HEAD, VOCAB = 32, 16, 64, 2, 4, 512
SPAN = 1.0  # alphas = betas = linspace(-SPAN, SPAN, n)


def build_model(device: str = "cpu"):
    """The user's model: GPT-2 from a config at initialization, eval mode, eager attention, float32."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(cfg).eval().to(device)


def make_batch(device: str = "cpu"):
    import torch

    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    return ids.to(device)


def directions(model):
    """Two filter-normalized Gaussian directions (ours), the same in every process."""
    import torch

    from tscope_widgets.kernels.landscape import random_direction

    return [
        random_direction(model, normalization="filter", generator=torch.Generator().manual_seed(seed))
        for seed in (10, 11)
    ]


def lm_loss(logits, ids):
    """Mean next-token cross-entropy: logits position t scored on token t + 1 (the adapter's rule)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def patched_filter_normalize_(self, ref_point, order=2):
    """loss-landscapes' ``ModelParameters.filter_normalize_`` without the fall-through that divides by zero.

    Same rules as the package: a one-dimensional parameter is scaled as a whole to the reference's norm;
    otherwise each row (index along dim 0) is scaled to the reference row's norm. Where the direction's
    norm is zero the direction stays zero (the package would divide 0.0 by 0.0).
    """
    for k, d in enumerate(self.parameters):
        ref = ref_point.parameters[k]
        if d.dim() == 1:
            n = float(d.norm(order))
            d.mul_(float(ref.norm(order)) / n if n > 0 else 0.0)
            continue
        dn = d.reshape(d.shape[0], -1).norm(order, dim=1)
        rn = ref.reshape(ref.shape[0], -1).norm(order, dim=1)
        scale = rn / dn.where(dn > 0, 1.0)
        d.mul_(scale.where(dn > 0, 0.0).reshape(-1, *([1] * (d.dim() - 1))))


def unpatched_filter_normalization_error(model) -> str:
    """What loss-landscapes' own filter normalization does on ``model`` (a copy): ``"ok"`` or the error."""
    from loss_landscapes.model_interface.model_parameters import rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    start = wrap_model(copy.deepcopy(model)).get_module_parameters()
    try:
        rand_u_like(start).filter_normalize_(start)
    except Exception as e:  # noqa: BLE001 (what it raises is the measurement)
        return f"{type(e).__name__}: {e}"
    return "ok"


def make_method(name: str, model, ids, n: int, device: str):
    """``run() -> [n, n] loss grid`` (a list of lists) for method ``name``, and a ``sync`` for CUDA timing."""
    import torch

    alphas = torch.linspace(-SPAN, SPAN, n, dtype=torch.float64)
    betas = alphas.clone()
    d1, d2 = directions(model)
    names = [k for k, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    base = [p.detach().clone() for p in params]

    if name in ("bare", "bare_copy"):
        if name == "bare_copy":
            from tscope_widgets.models.registry import adapt

            copy_ = adapt(model).analysis(torch.float32)
            batch = {"input_ids": ids}

            def forward():
                return copy_.loss(batch)

        else:

            def forward():
                return lm_loss(model(input_ids=ids).logits, ids)

        def run():
            with torch.no_grad():
                return [[float(forward()) for _ in range(n)] for _ in range(n)]

    elif name == "plain":
        u = [d1[k].to(device) for k in names]
        v = [d2[k].to(device) for k in names]

        def run():
            out = []
            with torch.no_grad():
                for a in alphas.tolist():
                    row = []
                    for b in betas.tolist():
                        for p, p0, du, dv in zip(params, base, u, v, strict=True):
                            p.copy_(p0 + a * du + b * dv)
                        row.append(float(lm_loss(model(input_ids=ids).logits, ids)))
                    out.append(row)
                for p, p0 in zip(params, base, strict=True):
                    p.copy_(p0)
            return out

    elif name in ("ll_plane", "ll_random"):
        import loss_landscapes
        from loss_landscapes.metrics import Loss
        from loss_landscapes.model_interface.model_parameters import ModelParameters

        ModelParameters.filter_normalize_ = patched_filter_normalize_
        metric = Loss(lambda out, y: lm_loss(out.logits, y), ids, ids)
        h = float(alphas[1] - alphas[0]) if n > 1 else 1.0

        def shifted(src, a: float, b: float):
            m = copy.deepcopy(src)
            with torch.no_grad():
                for (k, p), p0 in zip(m.named_parameters(), base, strict=True):
                    p.copy_(p0 + a * d1[k].to(device) + b * d2[k].to(device))
            return m

        if name == "ll_plane":

            def run():
                a0, b0 = float(alphas[0]), float(betas[0])
                start = shifted(model, a0, b0)
                end1, end2 = shifted(model, a0 + n * h, b0), shifted(model, a0, b0 + n * h)
                return loss_landscapes.planar_interpolation(start, end1, end2, metric, steps=n).tolist()

        else:

            def run():
                m = copy.deepcopy(model)
                torch.manual_seed(0)
                return loss_landscapes.random_plane(m, metric, distance=1, steps=n, normalization="filter").tolist()

    elif name in ("ours", "ours_p1"):
        from tscope_widgets.kernels.landscape import slice_2d

        ppc = 1 if name == "ours_p1" else None
        batch = {"input_ids": ids}

        def run():
            *_, last = slice_2d(model, batch, d1, d2, alphas, betas, points_per_call=ppc)  # keep the final snapshot
            return last.loss.tolist()

    else:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    return run


def child(method: str, n: int, repeats: int, device: str) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA, and torch.cuda.is_available() is False on this machine")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    model = build_model(device)
    ids = make_batch(device)
    row = {"method": method, "n": n, "device": device, "repeats": repeats}
    if method == "ll_random":
        row["unpatched_filter_normalize"] = unpatched_filter_normalization_error(model)
    try:
        make_method(method, model, ids, 2, device)()  # warm-up: a 2 x 2 grid on the same code path
        run = make_method(method, model, ids, n, device)
        walls, cpus = [], []
        for _ in range(repeats):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            grid = run()
            sync()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    except Exception as e:  # noqa: BLE001 (a peer failing on this device is a result)
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return row
    if method.startswith("ours"):
        from tscope_widgets.kernels.landscape import default_points_per_call

        if method == "ours":
            from tscope_widgets.kernels.landscape.evaluator import _batches
            from tscope_widgets.models.registry import adapt

            copy_ = adapt(model).analysis(torch.float32)
            row["points_per_call"] = default_points_per_call(copy_, _batches(copy_, {"input_ids": ids}))
        else:
            row["points_per_call"] = 1
    row.update(
        seconds=statistics.median(walls),
        cpu_seconds=statistics.median(cpus),
        grid=grid,
        threads=torch.get_num_threads(),
        device_name=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
    )
    return row


def grid_differences(row: dict, ours: dict) -> tuple[float, float | None]:
    """Max |row - ours| on the documented grid, and (loss-landscapes) on the points it actually evaluates."""
    import numpy as np

    a, b = np.asarray(row["grid"], dtype=np.float64), np.asarray(ours["grid"], dtype=np.float64)
    documented = float(np.abs(a - b).max())
    if not row["method"].startswith("ll_"):
        return documented, None
    diffs = [np.abs(a[i] - b[i]).max() if i % 2 else np.abs(a[i, :-1] - b[i, 1:]).max() for i in range(len(a))]
    return documented, float(max(diffs))


def table(rows: list[dict]) -> str:
    lines = [
        "| device | method | wall (s) | CPU (s) | ms per point | vs bare (user's model) | vs bare (analysis copy) "
        "| max abs diff vs ours (documented grid) | (points it evaluates) | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dev = "GPU" if r["device"].startswith("cuda") else "CPU"
        same = [x for x in rows if x["device"] == r["device"] and "error" not in x]
        bare = next((x for x in same if x["method"] == "bare"), None)
        bare_copy = next((x for x in same if x["method"] == "bare_copy"), None)
        ours = next((x for x in same if x["method"] == "ours"), None)
        note = r.get("error", "")
        if r["method"] == "ll_random":
            note = (note + "; " if note else "") + f"unpatched filter_normalize_: {r['unpatched_filter_normalize']}"
        if "points_per_call" in r:
            note = (note + "; " if note else "") + f"points_per_call={r['points_per_call']}"
        if "error" in r:
            lines.append(f"| {dev} | {LABELS[r['method']]} | - | - | - | - | - | - | - | {note} |")
            continue
        pts = r["n"] ** 2
        vb = f"{r['seconds'] / bare['seconds']:.2f}x" if bare else "-"
        vc = f"{r['seconds'] / bare_copy['seconds']:.2f}x" if bare_copy else "-"
        doc, actual = ("-", "-")
        if ours and r["method"] in GRIDS:
            d, a = grid_differences(r, ours)
            doc, actual = f"{d:.1e}", (f"{a:.1e}" if a is not None else "-")
        lines.append(
            f"| {dev} | {LABELS[r['method']]} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} | "
            f"{1e3 * r['seconds'] / pts:.2f} | {vb} | {vc} | {doc} | {actual} | {note} |"
        )
    return "\n".join(lines)


def ratio(num: dict, den: dict) -> tuple[float, float]:
    """``num / den`` by wall clock and by process CPU time (the steadier figure on a shared machine)."""
    return num["seconds"] / den["seconds"], num["cpu_seconds"] / den["cpu_seconds"]


def verdict(wall: float, cpu: float, ok) -> str:
    """``met`` when both figures meet the target, ``MISSED`` when neither does, else ``mixed``."""
    return "met" if ok(wall) and ok(cpu) else "MISSED" if not (ok(wall) or ok(cpu)) else "mixed"


def summary(rows: list[dict]) -> str:
    """Targets: CPU ours within 10% of the bare forwards and not slower than the faster peer; GPU >= 5x LL."""
    out = []

    def pick(device: str, method: str) -> dict | None:
        return next((r for r in rows if r["device"] == device and r["method"] == method and "error" not in r), None)

    def within(x: float) -> bool:
        return x <= 1.10

    ours, bare, bare_copy = pick("cpu", "ours"), pick("cpu", "bare"), pick("cpu", "bare_copy")
    if ours and bare:
        w, c = ratio(ours, bare)
        line = (
            f"CPU overhead: ours / {ours['n'] ** 2} bare forwards of the user's model = {w:.2f}x wall / {c:.2f}x CPU "
            f"({verdict(w, c, within)}, target <= 1.10x)"
        )
        if bare_copy:
            w, c = ratio(ours, bare_copy)
            line += f"; / the same forwards of our analysis copy = {w:.2f}x wall / {c:.2f}x CPU "
            line += f"({verdict(w, c, within)})"
        out.append(line)
    peers = [r for m in ("plain", "ll_plane", "ll_random") if (r := pick("cpu", m))]
    if ours and peers:
        best = min(peers, key=lambda r: r["cpu_seconds"])
        w, c = ratio(best, ours)
        out.append(
            f"CPU vs the faster peer ({LABELS[best['method']]}): it takes {w:.2f}x wall / {c:.2f}x CPU of ours "
            f"({verdict(w, c, lambda x: x >= 1.0)}, target: ours not slower, >= 1.00x)"
        )
    gpu_ours = pick("cuda", "ours")
    gpu_lls = [r for m in ("ll_plane", "ll_random") if (r := pick("cuda", m))]
    gpu_ll = min(gpu_lls, key=lambda r: r["seconds"]) if gpu_lls else None
    if gpu_ours and gpu_ll:
        w, _ = ratio(gpu_ll, gpu_ours)
        out.append(
            f"GPU, batched grid points (points_per_call={gpu_ours.get('points_per_call')}): loss-landscapes "
            f"({LABELS[gpu_ll['method']]}) takes "
            f"{w:.1f}x ours by wall clock ({'met' if w >= 5.0 else 'MISSED'}, target >= 5x)"
        )
    elif not any(r["device"].startswith("cuda") for r in rows):
        out.append("GPU target (>= 5x loss-landscapes with batched grid points): not measured, no --gpu run")
    else:
        out.append("GPU target: not measured, a GPU row failed (see the table)")
    for o in (r for r in rows if r["method"] == "ours" and "error" not in r):
        for r in rows:
            if r["device"] == o["device"] and r["method"] in GRIDS - {"ours"} and "error" not in r:
                d, a = grid_differences(r, o)
                part = f", {a:.1e} on the points it actually evaluates" if a is not None else ""
                out.append(f"{o['device']} grid agreement, {LABELS[r['method']]}: max |diff| {d:.1e}{part}")
    return "\n".join(f"- {line}" for line in out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=25, help="grid points per axis")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--quick", action="store_true", help="smoke run: 5 x 5 grid, 1 repeat")
    p.add_argument("--gpu", action="store_true", help="also run every method on CUDA")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        m, n, r, dev = args.child
        print(json.dumps(child(m, int(n), int(r), dev)))
        return
    if args.quick:
        args.n, args.repeats = 5, 1
    env = environment("loss-landscapes")
    print(f"environment: {env}", file=sys.stderr)
    devices = ["cpu"]
    if args.gpu:
        if env["cuda"] is None:
            raise SystemExit("--gpu needs CUDA, and torch.cuda.is_available() is False on this machine")
        devices.append("cuda")
    rows = []
    for dev in devices:
        for m in args.methods:
            row = spawn(__file__, ["--child", m, str(args.n), str(args.repeats), dev])
            if row:
                rows.append(row)
                msg = row.get("error") or f"{row['seconds']:.3f} s (cpu {row['cpu_seconds']:.3f} s)"
                print(f"{dev} {m}: {msg}", file=sys.stderr, flush=True)
    env["load_average_end"] = os.getloadavg()
    text = "\n\n".join([table(rows), summary(rows)])
    print(text)
    start, end = env["load_average_start"][0], env["load_average_end"][0]
    print(f"\nLoad average {start:.1f} at the start, {end:.1f} at the end.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
