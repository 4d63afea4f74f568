"""Run pyneuralode's benchmark suite and regenerate its tables and plots.

    python -m benchmarks [--quick] [--device cpu|cuda] [--only overhead,backends,...] [--torch-threads 1]
    python -m benchmarks --report-only          # tables + plots from the JSON already in benchmarks/results/

Cases (each writes ``benchmarks/results/<case>.json``, or ``<case>.cuda.json`` for ``--device cuda``):
overhead, backends, scaling, memory, startup, agreement. Afterwards ``benchmarks/results/README.md`` (all tables),
``benchmarks/results/SUMMARY.md`` (the section the top-level README embeds) and the PNG plots are rebuilt from
every results file present. ``make bench`` runs the full suite (≤ 30 min on a 2-core machine), ``make
bench-quick`` the quick one (< 5 min).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

CASES = ("overhead", "backends", "scaling", "memory", "startup", "agreement")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and points (< 5 minutes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the backends run; GPU results go to their own files and table")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch.set_num_threads for every torch contender (default 1: on a small shared CPU "
                             "more threads spin against each other and slow tiny solves many times over)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild tables and plots")
    args = parser.parse_args(argv)

    from ._common import Settings, cuda_reason, device_name, setup_torch, torch_threads
    from ._harness import write_results
    from .report import generate

    settings = Settings(quick=args.quick, device=args.device, torch_threads=args.torch_threads)
    failed = []
    if not args.report_only:
        cases = [c.strip() for c in args.only.split(",") if c.strip()]
        unknown = [c for c in cases if c not in CASES]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
        try:
            setup_torch(settings.torch_threads)
        except ImportError:
            pass
        device_note = {}
        if settings.device == "cuda":
            device_note = {b: cuda_reason(b) or f"ok: {device_name(b, 'cuda')}" for b in ("jax", "torch")}
            if not any(v.startswith("ok:") for v in device_note.values()):
                print(f"--device cuda: no backend sees a GPU here ({device_note}); recording the skip.")
                for case in cases:
                    write_results(f"{case}{settings.suffix}", {
                        "case": case, "device": "cuda", "quick": settings.quick,
                        "skipped": f"no CUDA device: {device_note}"})
                generate()
                return 0
        t_all = time.perf_counter()
        for case in cases:
            print(f"== {case}", flush=True)
            t0 = time.perf_counter()
            try:
                payload = importlib.import_module(f"benchmarks.{case}").run(
                    settings, log=lambda *a: print(*a, flush=True))
            except Exception as err:  # noqa: BLE001 - one failing case must not lose the others
                traceback.print_exc()
                failed.append(case)
                payload = {"error": f"{type(err).__name__}: {err}"}
            wall = time.perf_counter() - t0
            path = write_results(f"{case}{settings.suffix}", {
                "case": case, "device": settings.device, "quick": settings.quick,
                "torch_threads": torch_threads(), "cuda": device_note, "wall_s": wall,
                "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
                **payload})
            print(f"   {case}: {wall:.0f} s -> {path}", flush=True)
        print(f"== all cases: {time.perf_counter() - t_all:.0f} s")
    for path in generate():
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
