"""Benchmark: exact position-to-position sensitivity against the routes a user would otherwise take.

Model: a GPT-2-shaped config built offline (2 layers, d=64, 4 heads, MLP 256, vocab 512), in eval
mode, in the benchmarked dtype, with eager attention and transformers' own modules (its
``NewGELUActivation``). Target = last block's output, source = token embeddings, sequence length
16, batch 8 and 32, float32 and float64, CPU.

Methods (all compute s_ij = ||dh_i/de_j||_F^2 for every sample, i, j):
  a   naive loop: one autograd.grad per output coordinate per sample
  b   torch.autograd.functional.jacobian per sample
  b2  the same with vectorize=True
  b3  torch.func.vmap(jacrev(...)) over the batch, 8 samples per vmapped call (vmap's chunk_size:
      at batch 8 one call; unchunked, batch 32 in float64 would need ~40 GB)
  c   the seed document's loop shape: per sample, per output position i, the Jacobian of h_i (jacrev)
  d   ours: position_sensitivity(adapt(model), ids, layers=[-1], dtype=...), method="exact"
  e   ours, method="hutchinson", 8 probes (its error is measured against d)

The peers (a-c) differentiate what a user would write: ``e -> hidden state of the last block`` of
the user's model for one sample, through the adapter over the user's model (forward hooks on the
model's own forward; no analysis copy, no replaced modules). d and e are called as a user would call
them: on the user's model, which position_sensitivity copies privately (eval mode, eager attention,
fused GELU, the requested dtype); the copy is made inside the timed call.

Each (method, dtype, batch) runs in its own subprocess so that the peak resident memory it adds
(ru_maxrss after the runs minus before the first run) belongs to it alone. Times are medians over
repeats after one warm-up call, wall clock and process CPU time (the CPU time is the more stable
figure on a shared machine). Per-sample loops (a, b, b2, c) whose full run would take longer than
--max-loop-seconds are timed on the first n samples and extrapolated linearly to the batch (marked
"n/B" in the table). Errors are measured on the samples computed:
  max rel. diff = max |x - d| / max |d|;   Frobenius rel. error = ||x - d||_F / ||d||_F.

Extra tables:
  --chunk-sweep      d at batch 8 (both dtypes) for several chunk_size values: time, passes, peak RSS.
  --gpu-config       GPT-2-small-shaped (12 layers, d=768, 12 heads), batch 32, seq 10 and 64: d and e
                     throughput and peak CUDA memory on cuda (refused when CUDA is unavailable).

Usage:
  python benchmarks/sensitivity.py [--batches 8 32] [--dtypes float32 float64] [--methods a b ...]
                                   [--chunk-sweep] [--json out.json] [--markdown out.md]
  python benchmarks/sensitivity.py --quick        # smoke run: batch 2, float32, fast methods, 1 repeat
  python benchmarks/sensitivity.py --gpu-config   # on a CUDA machine
  python benchmarks/sensitivity.py --gpu-config --gpu-device cpu --gpu-seqs 3 --gpu-batch 1 --repeats 1  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from _harness import environment, spawn

METHODS = ["a", "b", "b2", "b3", "c", "d", "e"]
LOOPS = {"a", "b", "b2", "c"}  # per-sample Python loops: may be timed on a subset of samples
LABELS = {
    "a": "naive autograd.grad loop",
    "b": "autograd.functional.jacobian per sample",
    "b2": "jacobian(vectorize=True) per sample",
    "b3": "vmap(jacrev) over batch (vmap chunk_size=8)",
    "c": "seed loop: per sample, per position",
    "d": "ours exact",
    "e": "ours hutchinson k=8",
}
SEQ, D_MODEL, N_LAYER, N_HEAD, VOCAB = 16, 64, 2, 4, 512
B3_SAMPLES_PER_VMAP = 8
GPU_SHAPE = dict(n_embd=768, n_layer=12, n_head=12, vocab=50257, n_positions=1024)


def build_model(dtype_name: str, n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD, vocab=VOCAB, n_positions=64):
    """The user's model: GPT-2 from a config, eval mode, eager attention, in ``dtype``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(cfg).to(getattr(torch, dtype_name)).eval()


def make_method(name: str, model, ids, dtype, chunk_size=None, frozen: bool = False):
    """``run(samples) -> [len(samples), S, S]`` for method ``name`` on the given sample indices.

    The peers' results are detached: with the parameters requiring grad (as a user's model has
    them), each Jacobian also carries the autograd graph back to the weights, and results kept
    with it would hold every sample's graph (b3 and c reached 13-19 GB at batch 32 that way).
    ``frozen=True`` runs the peers with ``model.requires_grad_(False)``, their best case.
    """
    import torch
    from torch.func import jacrev, vmap

    from tscope_widgets import adapt
    from tscope_widgets.kernels.sensitivity import position_sensitivity

    if frozen and name not in ("d", "e"):
        model.requires_grad_(False)
    user = adapt(model)  # the adapter over the user's model: no copy, no replaced modules
    last = user.num_layers - 1
    with torch.no_grad():
        e_all = user.embed(ids).detach()  # [B, S, D]
    B, S, D = e_all.shape

    def h_of(e):  # one sample: [S, D] -> [S, H], hidden state of the last block
        return user.forward_from_embeddings(e[None], None, layers=[last])[last][0]

    def from_jacobian(J):  # [S, H, S, D] -> [S, S]
        return J.pow(2).sum(dim=(1, 3))

    if name == "a":

        def run(samples):
            out = torch.empty(len(samples), S, S, dtype=dtype)
            for k, b in enumerate(samples):
                e = e_all[b].clone().requires_grad_(True)
                h = h_of(e)
                for i in range(S):
                    acc = torch.zeros(S, dtype=dtype)
                    for c in range(h.shape[1]):
                        (g,) = torch.autograd.grad(h[i, c], e, retain_graph=True)
                        acc += g.pow(2).sum(-1)
                    out[k, i] = acc
            return out

    elif name in ("b", "b2"):
        vec = name == "b2"

        def run(samples):
            return torch.stack(
                [
                    from_jacobian(torch.autograd.functional.jacobian(h_of, e_all[b], vectorize=vec)).detach()
                    for b in samples
                ]
            )

    elif name == "b3":
        # vmap's own chunk_size bounds memory: unchunked, B=32 in float64 would need ~40 GB
        def run(samples):
            per_sample = vmap(lambda e: from_jacobian(jacrev(h_of)(e)).detach(), chunk_size=B3_SAMPLES_PER_VMAP)
            return per_sample(e_all[list(samples)])

    elif name == "c":

        def run(samples):
            out = torch.empty(len(samples), S, S, dtype=dtype)
            for k, b in enumerate(samples):
                for i in range(S):
                    J_i = jacrev(lambda e, i=i: h_of(e)[i])(e_all[b])  # [H, S, D]
                    out[k, i] = J_i.pow(2).sum(dim=(0, 2)).detach()
            return out

    elif name in ("d", "e"):
        kwargs = dict(layers=[-1], dtype=dtype, chunk_size=chunk_size)
        if name == "e":
            kwargs.update(method="hutchinson", probes=8, generator=torch.Generator().manual_seed(0))
        info = {}

        def run(samples):
            out = position_sensitivity(model, ids[list(samples)], **kwargs)
            info.update(out.info)
            return out[last]

        run.info = info
    else:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    return run


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def child(
    method: str, dtype_name: str, batch: int, repeats: int, max_loop_s: float, chunk_size, frozen: bool = False
) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    dtype = getattr(torch, dtype_name)
    model = build_model(dtype_name)
    ids = torch.randint(0, VOCAB, (batch, SEQ), generator=torch.Generator().manual_seed(1))
    run = make_method(method, model, ids, dtype, chunk_size, frozen)
    everyone = list(range(batch))
    rss0 = peak_rss_mib()
    samples = everyone
    if method in LOOPS:
        _, wall_one, _ = timed(run, [0])  # warm-up on one sample, and the cost of one
        if wall_one * batch > max_loop_s:
            samples = everyone[: max(1, min(batch, int(max_loop_s // wall_one)))]
    else:
        run(everyone)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        out, wall, cpu = timed(run, samples)
        walls.append(wall * batch / len(samples))
        cpus.append(cpu * batch / len(samples))
    peak = peak_rss_mib() - rss0
    ref = make_method("d", model, ids, dtype)(samples)
    diff = (out - ref).double()
    row = {
        "method": method,
        "dtype": dtype_name,
        "batch": batch,
        "seconds": statistics.median(walls),
        "cpu_seconds": statistics.median(cpus),
        "repeats": repeats,
        "timed_samples": len(samples),
        "peak_mib": peak,
        "max_rel_diff_vs_d": float(diff.abs().max() / ref.double().abs().max()),
        "fro_rel_err_vs_d": float(diff.norm() / ref.double().norm()),
        "threads": torch.get_num_threads(),
        "frozen": frozen,
    }
    if hasattr(run, "info"):
        row["info"] = {k: v for k, v in run.info.items() if isinstance(v, (int, float, str))}
    return row


def gpu_child(seq: int, batch: int, method: str, repeats: int, layers: str, device: str) -> dict:
    """Throughput of d or e on the GPT-2-small shape; ``device="cpu"`` only for a smoke test."""
    import torch

    from tscope_widgets.kernels.sensitivity import position_sensitivity

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--gpu-config needs CUDA, and torch.cuda.is_available() is False on this machine")

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    model = build_model("float32", **GPU_SHAPE).to(dev)
    ids = torch.randint(0, GPU_SHAPE["vocab"], (batch, seq), generator=torch.Generator().manual_seed(1)).to(dev)
    kwargs = dict(layers=[-1] if layers == "last" else "all", dtype=torch.float32)
    if method == "e":
        kwargs.update(method="hutchinson", probes=8, generator=torch.Generator(device=dev).manual_seed(0))
    out = position_sensitivity(model, ids, **kwargs)  # warm-up
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = position_sensitivity(model, ids, **kwargs)
        sync()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {
        "method": method,
        "seq": seq,
        "batch": batch,
        "layers": layers,
        "seconds": sec,
        "samples_per_s": batch / sec,
        "peak_cuda_mib": (torch.cuda.max_memory_allocated(dev) - base) / 2**20 if cuda else float("nan"),
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu (smoke test)",
        "info": {k: v for k, v in out.info.items() if isinstance(v, (int, float, str))},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the batched methods (b3, d, e)")
    p.add_argument("--loop-repeats", type=int, default=1, help="timed repeats of the loops (a, b, b2, c)")
    p.add_argument("--max-loop-seconds", type=float, default=120.0)
    p.add_argument("--chunk-sweep", action="store_true", help="also sweep chunk_size for d at batch 8")
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[4, 16, 64, 256])
    p.add_argument("--quick", action="store_true", help="smoke run: batch 2, float32, b2 b3 d e, 1 repeat")
    p.add_argument("--gpu-config", action="store_true", help="GPT-2-small shape on cuda: d and e throughput")
    p.add_argument("--gpu-layers", choices=["last", "all"], default="last")
    p.add_argument("--gpu-seqs", type=int, nargs="+", default=[10, 64])
    p.add_argument("--gpu-batch", type=int, default=32)
    p.add_argument("--gpu-device", default="cuda", help="cpu only for a smoke test of --gpu-config")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--frozen-peers", action="store_true", help="peers with model.requires_grad_(False)")
    p.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    p.add_argument("--gpu-child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        m, dt, b, r, max_s, chunk, frozen = args.child
        chunk = None if chunk == "auto" else int(chunk)
        print(json.dumps(child(m, dt, int(b), int(r), float(max_s), chunk, frozen == "1")))
        return
    if args.gpu_child:
        seq, b, m, r, layers, device = args.gpu_child
        print(json.dumps(gpu_child(int(seq), int(b), m, int(r), layers, device)))
        return
    env = environment(default_threads=2)
    print(f"environment: {env}", file=sys.stderr)
    if args.gpu_config:
        rows = []
        for seq in args.gpu_seqs:
            for m in ("d", "e"):
                row = spawn(
                    __file__,
                    [
                        "--gpu-child",
                        str(seq),
                        str(args.gpu_batch),
                        m,
                        str(args.repeats),
                        args.gpu_layers,
                        args.gpu_device,
                    ],
                )
                if row:
                    rows.append(row)
                    print(f"seq {seq} {m}: {row['seconds']:.3f} s", file=sys.stderr, flush=True)
        text = gpu_table(rows)
        return finish(args, env, {"gpu": rows}, text)
    if args.quick:
        args.batches, args.dtypes, args.methods = [2], ["float32"], ["b2", "b3", "d", "e"]
        args.repeats = args.loop_repeats = 1
        args.chunk_sizes = [16, 256]
    rows = []
    for dt in args.dtypes:
        for b in args.batches:
            for m in args.methods:
                reps = args.loop_repeats if m in LOOPS else args.repeats
                frozen = "1" if args.frozen_peers else "0"
                row = spawn(__file__, ["--child", m, dt, str(b), str(reps), str(args.max_loop_seconds), "auto", frozen])
                if row:
                    rows.append(row)
                    print(
                        f"{dt} B={b} {m:>2}: {row['seconds']:.3f} s (cpu {row['cpu_seconds']:.3f} s, "
                        f"{row['timed_samples']}/{b} samples)  peak +{row['peak_mib']:.0f} MiB  "
                        f"rel.diff {row['max_rel_diff_vs_d']:.1e}",
                        file=sys.stderr,
                        flush=True,
                    )
    sweep = []
    if args.chunk_sweep or args.quick:
        for dt in args.dtypes:
            for c in [*args.chunk_sizes, "auto"]:
                sweep_args = ["--child", "d", dt, str(min(8, *args.batches)), str(args.repeats), "0", str(c), "0"]
                row = spawn(__file__, sweep_args)
                if row:
                    row["chunk_size"] = c
                    sweep.append(row)
                    print(
                        f"sweep {dt} chunk {c}: {row['seconds']:.3f} s peak +{row['peak_mib']:.0f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
    env["load_average_end"] = os.getloadavg()
    text = "\n\n".join(t for t in (table(rows), summary(rows), sweep_table(sweep)) if t)
    finish(args, env, {"rows": rows, "chunk_sweep": sweep}, text)


def finish(args, env: dict, results: dict, text: str) -> None:
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, **results}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


def _ref(rows: list[dict], row: dict, method: str = "d") -> dict | None:
    return next(
        (r for r in rows if r["method"] == method and r["dtype"] == row["dtype"] and r["batch"] == row["batch"]),
        None,
    )


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [
        "| dtype | batch | method | wall (s) | CPU (s) | samples/s (wall) | d faster by (wall / CPU) "
        "| peak RSS added (MiB) | max rel. diff vs d | Frobenius rel. err. vs d |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        d = _ref(rows, row)
        speedup = f"{row['seconds'] / d['seconds']:.1f}x / {row['cpu_seconds'] / d['cpu_seconds']:.1f}x" if d else "-"
        timed = row["timed_samples"]
        part = "" if timed == row["batch"] else f" (timed {timed}/{row['batch']}, extrapolated)"
        lines.append(
            f"| {row['dtype']} | {row['batch']} | {row['method']} {LABELS[row['method']]}{part} | "
            f"{row['seconds']:.3f} | {row['cpu_seconds']:.3f} | {row['batch'] / row['seconds']:.2f} | {speedup} | "
            f"{row['peak_mib']:.0f} | {row['max_rel_diff_vs_d']:.1e} | {row['fro_rel_err_vs_d']:.1e} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Targets: d >= 20x faster than a, >= 2.5x faster than the fastest of b, b2, b3 (wall and CPU time)."""
    out = []
    for row in rows:
        if row["method"] != "d":
            continue
        parts = [f"{row['dtype']} B={row['batch']}:"]

        def ratio(other: dict, target: float, row: dict = row) -> str:
            wall, cpu = other["seconds"] / row["seconds"], other["cpu_seconds"] / row["cpu_seconds"]
            verdict = "met" if min(wall, cpu) >= target else "MISSED" if max(wall, cpu) < target else "mixed"
            return f"{wall:.1f}x wall / {cpu:.1f}x CPU ({verdict}, target {target:g}x)"

        if a := _ref(rows, row, "a"):
            parts.append(f"a/d = {ratio(a, 20)};")
        peers = [r for m in ("b", "b2", "b3") if (r := _ref(rows, row, m))]
        if peers:
            best = min(peers, key=lambda r: r["seconds"])
            parts.append(f"fastest of b/b2/b3 = {best['method']}, {best['method']}/d = {ratio(best, 2.5)}")
        out.append(" ".join(parts))
    return "\n".join(f"- {line}" for line in out)


def sweep_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [
        "| dtype | batch | chunk_size | vmapped passes | largest pass (vectors) | prefix groups | wall (s) | CPU (s) "
        "| peak RSS added (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        info = row.get("info", {})
        c = row["chunk_size"]
        c = f"auto ({info.get('chunk_size')})" if c == "auto" else c
        lines.append(
            f"| {row['dtype']} | {row['batch']} | {c} | {info.get('num_chunks')} | {info.get('largest_pass')} | "
            f"{info.get('prefix_groups')} | "
            f"{row['seconds']:.3f} | {row['cpu_seconds']:.3f} | {row['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def gpu_table(rows: list[dict]) -> str:
    lines = [
        "| device | seq | batch | layers | method | s per batch | samples/s | peak CUDA MiB | passes | prefix groups |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        info = r["info"]
        lines.append(
            f"| {r['device']} | {r['seq']} | {r['batch']} | {r['layers']} | {LABELS[r['method']]} | "
            f"{r['seconds']:.3f} | {r['samples_per_s']:.1f} | {r['peak_cuda_mib']:.0f} | "
            f"{info.get('num_chunks')} | {info.get('prefix_groups')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
