"""Video instances (MPEG-2, H.264, HEVC) decoded for the viewer (workstation model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from lucent.dicom import video
from tests.data import transfer_syntaxes as ts_samples
from workstation.model.pipeline import frames_from_dataset

pytestmark = pytest.mark.skipif(
    "ffmpeg" in ts_samples.missing_tools(), reason="needs Debian's ffmpeg (scripts/setup.sh)"
)

H264 = "1.2.840.10008.1.2.4.102"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("video")
    return ts_samples.build_video_samples(out, only=[H264])[H264].path


def test_the_viewer_gets_every_frame_of_a_clip_in_order(clip: Path) -> None:
    """pydicom has no H.264 decoder: the viewer could not open a clip the server held."""
    ds = dcmread(clip)
    frames = frames_from_dataset(ds)
    assert len(frames) == ts_samples.VIDEO_FRAMES
    for k in (0, len(frames) - 1):
        assert frames[k].photometric == "RGB"
        assert frames[k].stored.shape == (ds.Rows, ds.Columns, 3)
        assert np.array_equal(frames[k].stored, video.decode_frame(ds, k))
    assert not np.array_equal(frames[0].stored, frames[-1].stored)


def test_a_clip_too_large_to_decode_whole_is_refused_with_the_reason(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dcmread(clip)
    monkeypatch.setattr(video, "MAX_DECODED_BYTES", 1 << 20)
    with pytest.raises(ValueError, match="would take"):
        video.decode_all(ds)


def test_a_damaged_stream_is_a_clear_error(clip: Path) -> None:
    ds = dcmread(clip)
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(4096)], has_bot=False)
    with pytest.raises((ValueError, IndexError)):
        video.decode_frame(ds, 0)
