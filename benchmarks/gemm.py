"""The matrix-multiply ceiling of this CPU: GFLOP/s of ViT-B-32's largest linear layer in bf16 and fp32, with 1
and with all torch threads.

ViT-B-32 extraction on CPU is ~70% matrix multiplies (torch.profiler: addmm + mm), so the bf16 / fp32 ratio
printed here bounds what bf16 can gain over an fp32 loop (end to end / naive loop in extraction.py), and the
2-thread / 1-thread ratio says whether the second core adds matrix throughput (AMX units may be shared
between the vCPUs of a VM). The rounds alternate the four settings and the medians are reported.

    .venv/bin/python benchmarks/gemm.py
"""

from __future__ import annotations

import argparse
import time

import torch
from common import as_the_workflow_runs, load_average, machine, median

from clipva.encoder import cpu_has_fast_bf16


def gflops(dtype: torch.dtype, threads: int, tokens: int, seconds: float) -> float:
    """GFLOP/s of (tokens x 768) @ (768 x 3072) + bias, repeated for about `seconds`."""
    torch.set_num_threads(threads)
    x, w, b = torch.randn(tokens, 768, dtype=dtype), torch.randn(3072, 768, dtype=dtype), torch.randn(3072, dtype=dtype)
    torch.nn.functional.linear(x, w, b)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(x, w, b)
        n += 1
    return 2 * tokens * 768 * 3072 * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    as_the_workflow_runs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (50 tokens each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"machine: {machine()}; fast bf16: {cpu_has_fast_bf16()}; {load_average()}", flush=True)
    settings = [(dtype, t) for dtype in (torch.bfloat16, torch.float32) for t in sorted({1, threads})]
    results = {s: [] for s in settings}
    for _ in range(args.rounds):
        for dtype, t in settings:
            results[(dtype, t)].append(gflops(dtype, t, 50 * args.batch_size, args.seconds))
    torch.set_num_threads(threads)
    value = {s: median(v) for s, v in results.items()}
    for (dtype, t), v in value.items():
        print(f"{str(dtype).removeprefix('torch.'):9s} {t} thread(s): {v:7.0f} GFLOP/s")
    for t in sorted({1, threads}):
        print(f"ratio bf16 / fp32, {t} thread(s): {value[(torch.bfloat16, t)] / value[(torch.float32, t)]:.2f}")
    if threads > 1:
        for dtype in (torch.bfloat16, torch.float32):
            print(
                f"ratio {threads} / 1 threads, {str(dtype).removeprefix('torch.')}: "
                f"{value[(dtype, threads)] / value[(dtype, 1)]:.2f}"
            )
    print(load_average())


if __name__ == "__main__":
    main()
