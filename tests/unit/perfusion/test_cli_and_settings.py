"""Settings and the command line (issue 6; outside probe 8).

- Thresholds were never checked (``--threshold-core nan``: core 0 mL, DEFUSE-3 met), and a
  bad ``--config`` value crashed after the whole analysis.
- argparse's usage errors exited 2 (documented as "refused"), an unusable --out crashed
  with a traceback; all are now exit 64 with one line.
- A reused --out kept an earlier analysis's files next to the new result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lucent.perfusion import PerfusionConfig
from lucent.perfusion.cli import EXIT_REFUSED, EXIT_USAGE, main


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold_core": math.nan}, "threshold_core must be a finite number"),
        ({"threshold_core": 5}, "threshold_core must be > 0 and < 1"),
        ({"threshold_core": 0.0}, "threshold_core must be > 0 and < 1"),
        ({"threshold_core": "abc"}, "threshold_core must be a number"),
        ({"threshold_tmax": -3}, "threshold_tmax must be > 0"),
        ({"threshold_tmax": math.inf}, "threshold_tmax must be a finite number"),
        ({"threshold_tmax": 12}, "threshold_tmax_severe (10 s) must be above threshold_tmax"),
        ({"min_island_ml": -1}, "min_island_ml must be >= 0"),
        ({"threshold_adc": -5}, "threshold_adc must be >= 50"),
        ({"threshold_adc": 0.62}, "x10^-6 mm²/s"),
        ({"method": "foo"}, "method must be one of"),
        ({"motion_correction": "yes"}, "motion_correction must be true or false"),
        ({"min_time_points": 10.5}, "min_time_points must be an integer"),
        ({"threshold_tmax": True}, "threshold_tmax must be a number"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        PerfusionConfig.from_dict(values)
    assert message in str(refused.value)


def test_valid_settings_pass_and_json_lists_become_tuples() -> None:
    config = PerfusionConfig.from_dict(
        {"threshold_core": 0.25, "threshold_tmax": 8, "ct_brain_hu": [-5, 85], "method": "ssvd"}
    )
    assert config.threshold_tmax == 8 and config.ct_brain_hu == (-5, 85)


# ---------- command line ----------


def _usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lucent-perfusion: usage error:"), err
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "foo"], "invalid choice: 'foo'"),
        (["--threshold-core", "abc"], "invalid float value: 'abc'"),
        (["--threshold-core", "nan"], "threshold_core must be a finite number"),
        (["--threshold-core", "5"], "threshold_core must be > 0 and < 1"),
        (["--threshold-tmax", "-3"], "threshold_tmax must be > 0"),
        (["--min-island-ml", "-1"], "min_island_ml must be >= 0"),
        (["--threshold-adc", "-5"], "threshold_adc must be >= 50"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_64_with_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    line = _usage(["analyse", str(tmp_path), "--out", str(out), *extra], capsys)
    assert message in line
    assert not out.exists()


def test_missing_out_and_bad_config_file_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "required: --out" in _usage(["analyse", str(tmp_path)], capsys)
    bad = tmp_path / "bad.json"
    bad.write_text('{"threshold_core": "abc"}')
    out = str(tmp_path / "out")
    line = _usage(["analyse", str(tmp_path), "--out", out, "--config", str(bad)], capsys)
    assert "threshold_core must be a number" in line
    bad.write_text("[1, 2]")
    line = _usage(["analyse", str(tmp_path), "--out", out, "--config", str(bad)], capsys)
    assert "JSON object" in line


def test_an_unusable_out_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file" in _usage(["analyse", str(tmp_path), "--out", str(a_file)], capsys)
    line = _usage(["analyse", str(tmp_path), "--out", "/proc/lucent-x"], capsys)
    assert "cannot create the folder" in line
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "dicom").write_text("x")
    assert "dicom is a file" in _usage(["analyse", str(tmp_path), "--out", str(taken)], capsys)


def test_a_reused_out_keeps_nothing_of_the_earlier_run(tmp_path: Path) -> None:
    """An earlier run's result.json and dicom/R*.dcm go before the new run (here refused:
    exit 2, which left every old file in place); files we did not write stay."""
    out = tmp_path / "out"
    (out / "dicom").mkdir(parents=True)
    (out / "result.json").write_text('{"status": "ok"}')
    for k in range(1, 12):
        (out / "dicom" / f"R{k:05d}.dcm").write_bytes(b"old")
    (out / "dicom" / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    rc = main(["analyse", str(tmp_path / "empty"), "--out", str(out), "--quiet"])
    assert rc == EXIT_REFUSED
    assert json.loads((out / "result.json").read_text())["status"] == "refused"
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["notes.txt"]
