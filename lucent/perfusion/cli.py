"""``lucent-perfusion analyse INPUT_DIR --out OUTPUT_DIR`` (issue 6, "Command line").

Runs the whole analysis on a folder of DICOM files without the server, writes the result
DICOM objects and result.json. result.json is the one place a caller looks; its ``status``
and the exit status say how it went:

- 0, ``"ok"``: analysed, every output written.
- 2, ``"refused"``: not analysed (not perfusion, incomplete, inconsistent geometry, ...);
  ``code`` and ``reason`` say why.
- 3, ``"partial"``: analysed (volumes, QC, maps in result.json are valid) but some output
  objects could not be made; ``output_failures`` lists which and why.
- 1, ``"failed"``: an internal error; ``reason`` names it and the traceback is on stderr.
- 64: usage error (bad arguments or settings, missing input, an --out that cannot be
  used); one line on stderr, nothing analysed, nothing written or removed.

OUTPUT_DIR may be reused: result.json and the dicom/R*.dcm files an earlier run wrote there
are removed before the analysis starts (other files are left alone), so what is there
afterwards is this run's result, also after a refusal or a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import typing
from collections.abc import Sequence
from pathlib import Path

from .config import PerfusionConfig
from .model import Refusal
from .output_dir import OutputDirError, prepare
from .pipeline import NOT_USED_FLAGS, analyse
from .segmentation import ratio_text

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2, 3, 64
OUTPUT_FAILURES = "output_failures"
"""``dicom_out.OUTPUT_FAILURES`` (not imported: highdicom loads only when DICOM is written)."""
PROG = "lucent-perfusion"


class UsageError(Exception):
    """Bad command line: exit 64 with one line (argparse's own exit 2 means "refused")."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyse", aliases=["analyze"], help="analyse a folder of DICOM files")
    a.add_argument("input", type=Path, help="folder (or file) with the perfusion series")
    a.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (created if needed); result.json and dicom/R*.dcm of an earlier "
        "run in it are removed first, other files are left alone",
    )
    a.add_argument(
        "--dwi",
        type=Path,
        help="folder with the ADC map of the same patient (MR core = ADC <= threshold); an "
        "input of another patient or that is not an ADC map is not used: the core comes "
        "from rCBF and result.json says why (QC flag dwi_not_used)",
    )
    a.add_argument(
        "--flair",
        type=Path,
        help="folder with a FLAIR series of the same patient (coregistered, overlay pages)",
    )
    a.add_argument("--threshold-core", type=float, help="rCBF fraction for CT core (0.3)")
    a.add_argument("--threshold-tmax", type=float, help="Tmax (s) for hypoperfusion (6)")
    a.add_argument("--threshold-adc", type=float, help="ADC (x10^-6 mm²/s) for MR core (620)")
    a.add_argument("--min-island-ml", type=float, help="remove smaller islands (0.5 mL)")
    a.add_argument("--method", choices=["osvd", "ssvd", "tikhonov"], help="deconvolution")
    a.add_argument("--no-motion-correction", action="store_true")
    a.add_argument("--no-dicom", action="store_true", help="write result.json only")
    a.add_argument("--config", type=Path, help="JSON file with PerfusionConfig keys")
    a.add_argument("--quiet", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> PerfusionConfig:
    """Settings of ``--config`` overridden by the options; ValueError names a bad one."""
    values: dict[str, object] = {}
    if args.config:
        loaded = json.loads(args.config.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a JSON object of PerfusionConfig keys")
        values.update(loaded)
    for key in ("threshold_core", "threshold_tmax", "threshold_adc", "min_island_ml", "method"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.no_motion_correction:
        values["motion_correction"] = False
    if args.no_dicom:
        values["write_dicom"] = False
    return PerfusionConfig.from_dict(values)


def _usage(message: str) -> int:
    print(f"{PROG}: usage error: {message} (see {PROG} analyse --help)", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _usage(str(exc))
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        return _usage(str(exc))
    for name in ("input", "dwi", "flair"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            return _usage(f"{path} does not exist")
    try:
        prepare(args.out, config.write_dicom)
    except OutputDirError as exc:
        return _usage(str(exc))

    def progress(fraction: float, stage: str) -> None:
        if not args.quiet:
            print(f"[{fraction:4.0%}] {stage}", file=sys.stderr)

    try:
        result = analyse(
            args.input,
            config=config,
            dwi=args.dwi,
            flair=args.flair,
            out_dir=args.out,
            progress=progress,
        )
    except Exception as exc:  # noqa: BLE001 - reported in result.json and on stderr
        traceback.print_exc()
        reason = f"internal error: {type(exc).__name__}: {exc}"
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            doc = {"status": "failed", "code": "internal_error", "reason": reason}
            (args.out / "result.json").write_text(json.dumps(doc, indent=2))
        except OSError:
            pass
        print(f"lucent-perfusion: failed: {reason}", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(result, Refusal):
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
        print(f"lucent-perfusion: refused ({result.code}): {result.reason}", file=sys.stderr)
        return EXIT_REFUSED
    for flag in result.qc["flags"]:
        if flag["code"] in NOT_USED_FLAGS.values():  # a safety matter: printed even with --quiet
            print(f"{PROG}: warning: {flag['reason']}", file=sys.stderr)
    failures = result.qc.get(OUTPUT_FAILURES) or []
    if failures:
        # result.json was written by the pipeline; say there that it is partial and what is missing
        path = args.out / "result.json"
        doc = json.loads(path.read_text())
        doc["status"] = "partial"
        doc["output_failures"] = failures
        path.write_text(json.dumps(doc, indent=2))
        for f in failures:
            print(
                f"lucent-perfusion: output not written: {f['output']}: {f['reason']}",
                file=sys.stderr,
            )
    v = result.summary
    if not args.quiet:
        print(
            f"core {v['core_ml']} mL, hypoperfusion {v['hypoperfusion_ml']} mL, mismatch "
            f"{v['mismatch_ml']} mL, ratio {ratio_text(v)}, "
            f"DEFUSE-3 {v['defuse3']['verdict']}"
            + "".join(f" ({c})" for c in v["defuse3"].get("uncertain_criteria", []))
        )
    return EXIT_PARTIAL if failures else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
