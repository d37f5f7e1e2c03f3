"""Perfusion benchmark: CTP 512x512 x 16 slices x 45 time points, DICOM in -> SC + maps out.

Prints one table: seconds per stage and peak memory for Lucent's vectorised oSVD and for a
straightforward per-voxel oSVD loop (explicit SVD of the block-circulant matrix, Python loop
over voxels and thresholds) in the same run. The loop is timed on a random sample of brain
voxels and extrapolated to all of them (marked "*"); every other stage is measured.

    python bench/perfusion.py            # issue 6 size (target < 30 s, < 4 GB)
    python bench/perfusion.py --quick    # 128x128 x 8 x 30, seconds
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = (
    "load",
    "motion",
    "timing",
    "mask",
    "concentration",
    "aif",
    "denoise",
    "deconvolution",
    "coregistration",
    "segmentation",
    "qc",
    "output",
)


def _child(kind: str, src: str, out: str, sample: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    import numpy as np

    from lucent.perfusion import maps as maps_mod
    from lucent.perfusion.config import PerfusionConfig
    from lucent.perfusion.deconvolution import osvd, osvd_reference
    from lucent.perfusion.pipeline import PerfusionResult, analyse

    info: dict[str, Any] = {}
    if kind == "baseline":

        def loop_osvd(conc: np.ndarray, aif: np.ndarray, dt: float, oi: float) -> Any:
            rng = np.random.default_rng(0)
            idx = rng.choice(len(conc), size=min(sample, len(conc)), replace=False)
            t0 = time.perf_counter()
            osvd_reference(conc[idx], aif, dt, oi)
            per_voxel = (time.perf_counter() - t0) / len(idx)
            info["loop_seconds"] = per_voxel * len(conc)
            info["voxels"] = len(conc)
            return osvd(conc, aif, dt, oi)  # downstream stages need every voxel

        maps_mod.osvd = loop_osvd  # type: ignore[assignment]
    result = analyse(src, config=PerfusionConfig(), out_dir=out)
    assert isinstance(result, PerfusionResult), result
    timings = dict(result.timings)
    if kind == "baseline":
        timings["deconvolution"] += info["loop_seconds"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    queue.put(
        {
            "timings": timings,
            "peak_mb": peak_mb,
            "voxels": info.get("voxels"),
            "core": result.summary["core_ml"],
            "files": len(result.outputs),
        }
    )


def _run(kind: str, src: Path, out: Path, sample: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    proc = ctx.Process(target=_child, args=(kind, str(src), str(out), sample, queue))
    t0 = time.perf_counter()
    proc.start()
    res: dict[str, Any] = queue.get()
    proc.join()
    res["wall"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small series (smoke run)")
    parser.add_argument("--sample", type=int, default=3000, help="voxels timed for the loop")
    args = parser.parse_args(argv)
    from tests.data.phantom import PhantomSpec, generate

    if args.quick:
        spec = PhantomSpec(matrix=128, n_slices=8, n_times=30, dt=2.0, noise=6.0, seed=2)
    else:
        spec = PhantomSpec(
            matrix=512,
            n_slices=16,
            n_times=45,
            dt=1.5,
            noise=15.0,
            seed=2,
            penumbra_radii_mm=(26, 40, 25),
            core_radii_mm=(15, 20, 15),
        )
    with tempfile.TemporaryDirectory(prefix="lucent-bench-") as tmp:
        src = Path(tmp) / "in"
        t0 = time.perf_counter()
        generate(spec, src)
        gen = time.perf_counter() - t0
        ours = _run("ours", src, Path(tmp) / "ours", args.sample)
        base = _run("baseline", src, Path(tmp) / "base", args.sample)
    n = spec.n_times * spec.n_slices
    print(
        f"CTP {spec.matrix}x{spec.matrix} x {spec.n_slices} slices x {spec.n_times} time points "
        f"({n} DICOM files, generated in {gen:.1f} s); brain voxels deconvolved: {base['voxels']}"
    )
    print(f"{'stage':16s} {'lucent (s)':>12s} {'per-voxel loop (s)':>20s}")
    for stage in STAGES:
        a, b = ours["timings"].get(stage, 0.0), base["timings"].get(stage, 0.0)
        mark = "*" if stage == "deconvolution" else " "
        print(f"{stage:16s} {a:12.2f} {b:19.2f}{mark}")
    ta, tb = sum(ours["timings"].values()), sum(base["timings"].values())
    print(f"{'total':16s} {ta:12.2f} {tb:19.2f}{'*'}")
    print(f"{'peak memory MB':16s} {ours['peak_mb']:12.0f} {base['peak_mb']:20.0f}")
    print(f"{'process wall':16s} {ours['wall']:12.2f} {base['wall']:20.2f}")
    print(
        f"* loop timed on {args.sample} random brain voxels and extrapolated; "
        f"core {ours['core']} mL; {ours['files']} output files"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
