"""Benchmark: exact position-to-position sensitivity against the routes a user would otherwise take.

Model: a GPT-2-shaped config built offline (2 layers, d=64, 4 heads, vocab 512), target = last block,
source = token embeddings, sequence length 16, batch 8 and 32, float32 and float64, CPU.

Methods (all compute s_ij = ||dh_i/de_j||_F^2 for every sample, i, j):
  a   naive loop: one autograd.grad per output coordinate per sample
  b   torch.autograd.functional.jacobian per sample
  b2  the same with vectorize=True
  b3  torch.func.vmap(jacrev(...)) over the batch
  c   the seed document's loop shape: per sample, per output position i, the Jacobian of h_i (jacrev)
  d   ours, method="exact" (mode chosen automatically)
  e   ours, method="hutchinson", 8 probes (relative error against d)

Each (method, dtype, batch) runs in its own subprocess so that the peak resident memory it adds
(ru_maxrss after the runs minus before the first run) belongs to it alone. Times are medians over
repeats after one warm-up call. Results are printed as a Markdown table and written as JSON.

Usage: python benchmarks/sensitivity.py [--batches 8 32] [--dtypes float32 float64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ["a", "b", "b2", "b3", "c", "d", "e"]
LABELS = {
    "a": "naive autograd.grad loop",
    "b": "autograd.functional.jacobian per sample",
    "b2": "jacobian(vectorize=True) per sample",
    "b3": "vmap(jacrev) over batch",
    "c": "seed loop: per sample, per position",
    "d": "ours exact",
    "e": "ours hutchinson k=8",
}
SEQ, D_MODEL, N_LAYER, N_HEAD, VOCAB = 16, 64, 2, 4, 512


def build(dtype_name: str, batch: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tscope_widgets import adapt

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    model = GPT2LMHeadModel(cfg)
    dtype = getattr(torch, dtype_name)
    adapter = adapt(model).analysis(dtype)
    ids = torch.randint(0, VOCAB, (batch, SEQ), generator=torch.Generator().manual_seed(1))
    return torch, adapter, ids, dtype


def make_method(name: str, torch, adapter, ids, dtype):
    from torch.func import jacrev, vmap

    from tscope_widgets.kernels.sensitivity import position_sensitivity

    e_all = adapter.embed(ids).detach()  # [B, S, D]
    B, S, D = e_all.shape

    def h_of(e):  # one sample: [S, D] -> [S, H]
        return adapter.forward_from_embeddings(e[None], None, layers=[-1])[N_LAYER - 1][0]

    def from_jacobian(J):  # [S, H, S, D] -> [S, S]
        return J.pow(2).sum(dim=(1, 3))

    if name == "a":
        def run():
            out = torch.empty(B, S, S, dtype=dtype)
            for b in range(B):
                e = e_all[b].clone().requires_grad_(True)
                h = h_of(e)
                for i in range(S):
                    acc = torch.zeros(S, dtype=dtype)
                    for c in range(h.shape[1]):
                        (g,) = torch.autograd.grad(h[i, c], e, retain_graph=True)
                        acc += g.pow(2).sum(-1)
                    out[b, i] = acc
            return out
    elif name in ("b", "b2"):
        vec = name == "b2"

        def run():
            return torch.stack([
                from_jacobian(torch.autograd.functional.jacobian(h_of, e_all[b], vectorize=vec))
                for b in range(B)
            ])
    elif name == "b3":
        def run():
            return vmap(lambda e: from_jacobian(jacrev(h_of)(e)))(e_all)
    elif name == "c":
        def run():
            out = torch.empty(B, S, S, dtype=dtype)
            for b in range(B):
                for i in range(S):
                    J_i = jacrev(lambda e, i=i: h_of(e)[i])(e_all[b])  # [H, S, D]
                    out[b, i] = J_i.pow(2).sum(dim=(0, 2))
            return out
    elif name == "d":
        def run():
            return position_sensitivity(adapter, ids, layers=[-1], method="exact")[N_LAYER - 1]
    elif name == "e":
        gen = torch.Generator().manual_seed(0)

        def run():
            return position_sensitivity(adapter, ids, layers=[-1], method="hutchinson", probes=8, generator=gen)[
                N_LAYER - 1
            ]
    else:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    return run


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(method: str, dtype_name: str, batch: int, repeats: int) -> dict:
    torch, adapter, ids, dtype = build(dtype_name, batch)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    run = make_method(method, torch, adapter, ids, dtype)
    reference = make_method("d", torch, adapter, ids, dtype)
    rss0 = peak_rss_mib()
    out = run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    peak = peak_rss_mib() - rss0
    ref = reference()
    rel = float((out - ref).abs().max() / ref.abs().max())
    return {"method": method, "dtype": dtype_name, "batch": batch, "seconds": statistics.median(times),
            "repeats": repeats, "peak_mib": peak, "max_rel_diff_vs_d": rel}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs=4, metavar=("METHOD", "DTYPE", "BATCH", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        m, dt, b, r = args.child
        print(json.dumps(child(m, dt, int(b), int(r))))
        return
    rows = []
    for dt in args.dtypes:
        for b in args.batches:
            for m in args.methods:
                repeats = 1 if m in ("a", "b", "c") else 5
                res = subprocess.run(
                    [sys.executable, __file__, "--child", m, dt, str(b), str(repeats)],
                    capture_output=True, text=True, check=False,
                )
                if res.returncode:
                    print(f"{m} {dt} B={b} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{dt} B={b} {m:>2}: {row['seconds']:.4f} s  peak +{row['peak_mib']:.0f} MiB  "
                      f"rel.diff {row['max_rel_diff_vs_d']:.1e}", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def table(rows: list[dict]) -> str:
    lines = ["| dtype | batch | method | time (s) | samples/s | speed-up of d | peak RSS added (MiB) | max rel. diff vs d |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        d = next((r for r in rows if r["method"] == "d" and r["dtype"] == row["dtype"] and r["batch"] == row["batch"]),
                 None)
        speedup = f"{row['seconds'] / d['seconds']:.1f}x" if d else "-"
        lines.append(
            f"| {row['dtype']} | {row['batch']} | {row['method']} {LABELS[row['method']]} | {row['seconds']:.4f} | "
            f"{row['batch'] / row['seconds']:.1f} | {speedup} | {row['peak_mib']:.0f} | {row['max_rel_diff_vs_d']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
