"""Run every `benchmarks/bench_*.py` (each defines `run() -> dict`) in one process and merge the
figures into benchmarks/results.json. Figures are ratios measured within one run (or, where an
issue asks for it, milliseconds), never asserted in tests.

    .venv/bin/python benchmarks/run_all.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="bench file stems to run, e.g. bench_hardware")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--device", default=None, help="device of the device-aware benchmarks (bench_speed, "
                    "bench_paper_cost): sets CIMNAS_BENCH_DEVICE (default auto)")
    args = ap.parse_args()
    if args.device is not None:
        os.environ["CIMNAS_BENCH_DEVICE"] = args.device
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and path.stem not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.perf_counter()
        print(f"[bench] {path.stem} ...", flush=True)
        figures = mod.run()
        for k, v in figures.items():
            print(f"  {k} = {v:.4g}" if isinstance(v, float) else f"  {k} = {v}", flush=True)
        results.update(figures)
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    results["_machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "bench_device": os.environ.get("CIMNAS_BENCH_DEVICE", "auto"),
    }
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
