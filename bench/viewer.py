"""Viewer benchmark (issue 5): open a large CT series, scroll, drag W/L; against the raw bound.

    .venv/bin/python bench/viewer.py [--slices 1000] [--size 512] [--viewport 1024]

A real server (subprocess, free ports) receives an n-slice CT via storescu; then, in this
process, the workstation's own path is timed: "open series" → first image drawn, → whole
series scrollable; scrolling and W/L-drag frames per second in a viewport of the given size
(QPainter path, offscreen platform, software rendering); peak memory (ru_maxrss). In the same
run the lower bound: the same decrypted volume bytes read into numpy (one HTTP request, no
decode/render). Last, the 3D view (workstation.render.volume3d, the renderer the Qt window
uses) in an offscreen VTK window of the viewport size, multisampling off: one rotate step
(5° azimuth + render) at the interactive update rate (15/s asked, the mapper samples
coarser) and as a still full-quality frame; measured after peak memory, since the ray cast
mapper adds its own gradient tables.
Targets: first image < 0.5 s, series < 3 s, ≥ 60 fps, memory ≤ voxels + 400 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rotate_fps(data: object, size: int, frames: int) -> tuple[float, float]:
    """Frames/s of a 5° rotate step of the volume rendering: interactive, then still."""
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    from workstation.model.volume import volume_of
    from workstation.render.volume3d import VolumeScene

    grid = volume_of(data)  # type: ignore[arg-type]
    if isinstance(grid, str):
        return float("nan"), float("nan")
    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(size, size)
    scene = VolumeScene(grid, window)
    scene.render()  # first render builds the mapper's tables: not a rotate step
    out = []
    for rate in (15.0, 0.0001):
        window.SetDesiredUpdateRate(rate)
        scene.rotate(5)
        scene.render()
        t = time.perf_counter()
        for _ in range(frames):
            scene.rotate(5)
            scene.render()
        out.append(frames / (time.perf_counter() - t))
    window.Finalize()
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--viewport", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rotate-frames", type=int, default=10)
    args = ap.parse_args()

    from PySide6.QtWidgets import QApplication

    from tests.data.samples import write_ct_series
    from tests.integration.dicom_io import storescu
    from tests.support.lucent import LucentServer
    from workstation.model import loader
    from workstation.model.viewer import Layout
    from workstation.qt.viewport import ViewportWidget

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp, LucentServer(Path(tmp) / "srv") as srv:
        files = write_ct_series(Path(tmp) / "ct", n=args.slices, rows=args.size, cols=args.size)
        t = time.perf_counter()
        done = storescu("127.0.0.1", srv.port, srv.ae_title, files, timeout=3600)
        assert done.returncode == 0, done.stderr[-2000:]
        ingest = time.perf_counter() - t
        client = srv.client()
        (study,) = client.studies(patient_id="LUCENT-CT-001")
        (series,) = client.series(study.study_uid)
        voxel_mb = args.slices * args.size * args.size * 2 / 2**20

        # Lower bound: the same volume bytes into numpy, nothing else (after one warm-up so
        # both sides read from a warm page cache).
        loader.fetch_volume_array(client, series.series_uid)
        t = time.perf_counter()
        raw = loader.fetch_volume_array(client, series.series_uid)
        raw_s = time.perf_counter() - t
        del raw
        base_rss = rss_mb()

        layout = Layout()
        widget = ViewportWidget(layout, 0)
        widget.resize(args.viewport, args.viewport)
        widget.show()
        app.processEvents()
        vp = layout.viewports[0]
        t0 = time.perf_counter()
        data = loader.describe(client, series, study)
        vp.set_series(data)
        first_drawn: list[float] = []

        def on_loaded(index: int) -> None:
            if index == 0 and not first_drawn:
                widget.repaint()
                first_drawn.append(time.perf_counter() - t0)

        data.loaded.connect(on_loaded)
        loader.load(client, data)
        whole = time.perf_counter() - t0
        app.processEvents()

        n = min(args.frames, len(data))
        t = time.perf_counter()
        for k in range(n):
            vp.set_index(k)
            widget.repaint()
        scroll_fps = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            vp.drag_window(2, 1)
            widget.repaint()
        wl_fps = n / (time.perf_counter() - t)
        peak = rss_mb()
        interactive_fps, still_fps = rotate_fps(data, args.viewport, args.rotate_frames)

    print(f"Viewer benchmark: {args.slices} × {args.size}² CT ({voxel_mb:.0f} MB voxels), "
          f"viewport {args.viewport}², Qt {os.environ['QT_QPA_PLATFORM']}")  # fmt: skip
    print(f"(ingest by storescu: {ingest:.1f} s, not part of the viewer figures)")
    print(f"{'measure':38} {'workstation':>12} {'raw bound':>10} {'target':>10}")
    print(f"{'open → first image (s)':38} {first_drawn[0] if first_drawn else float('nan'):12.3f}"
          f" {'':>10} {'< 0.5':>10}")  # fmt: skip
    print(f"{'open → whole series scrollable (s)':38} {whole:12.2f} {raw_s:10.2f} {'< 3':>10}")
    print(f"{'scroll (frames/s)':38} {scroll_fps:12.0f} {'':>10} {'≥ 60':>10}")
    print(f"{'W/L drag (frames/s)':38} {wl_fps:12.0f} {'':>10} {'≥ 60':>10}")
    print(f"{'3D rotate step, interactive (frames/s)':38} {interactive_fps:12.1f} {'':>10} "
          f"{'':>10}")  # fmt: skip
    print(f"{'3D rotate step, still quality (frames/s)':38} {still_fps:12.2f} {'':>10} {'':>10}")
    print(f"{'peak RSS (MB)':38} {peak:12.0f} {base_rss:10.0f} "
          f"{f'≤ {voxel_mb + 400:.0f}':>10}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
