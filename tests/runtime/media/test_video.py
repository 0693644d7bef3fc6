"""The media layer on the files people actually have: time, orientation, audio and broken files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.core.errors import ImageError, VideoError
from fomm_deploy.runtime.media.preprocess import load_image
from fomm_deploy.runtime.media.video import VideoWriter, iter_timed_frames, open_video, read_frames
from tests import media_corpus as mc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("media corpus ü")  # a space and a non-ASCII character in every path
    return {
        "vfr": mc.vfr_clip(root / "vfr clip.mp4"),
        "offset": mc.offset_clip(root / "starts late.mp4"),
        "short_audio": mc.short_audio_clip(root / "short audio.mp4"),
        "audio_only": mc.audio_only(root / "voice.m4a"),
        "mp3": mc.mp3_with_cover(root / "song.mp3", root / "cover.png"),
        "truncated": mc.truncated(root / "cut off.mp4", root),
        "root": root,
    }


def _timed_copy(src, out, **writer):
    cap, info = open_video(src)
    cap.release()
    first = None
    with VideoWriter(out, info.fps, (info.width, info.height), **writer) as w:
        for frame, t in iter_timed_frames(src):
            first = t if first is None else first
            w.write(frame, t - first)
    return info, w


def test_variable_frame_rate_keeps_its_timing(corpus, tmp_path):
    times = [t for _, t in iter_timed_frames(corpus["vfr"])]
    assert len(times) == 60 and times[49] == pytest.approx(0.98, abs=1e-3) and times[50] == pytest.approx(1.0, abs=1e-3)
    assert np.diff(times)[-1] == pytest.approx(0.1, abs=1e-3)
    info, w = _timed_copy(corpus["vfr"], tmp_path / "copy.mp4")
    assert info.fps == 50 and w.received == 60
    # 2 s of video at a constant 50 fps: the frame shown at 1.5 s is the one the source shows at 1.5 s.
    assert w.frames == 100 and mc.count_frames(tmp_path / "copy.mp4") == 100
    frames = [f for f, _ in iter_timed_frames(tmp_path / "copy.mp4")]
    source = {round(t, 2): f for f, t in iter_timed_frames(corpus["vfr"])}
    for t in (0.5, 1.0, 1.5, 1.95):
        shown = source[max(k for k in source if k <= t + 1e-6)]
        assert abs(mc.bar_position(frames[int(round(t * 50))]) - mc.bar_position(shown)) <= 1, t


def test_video_that_starts_after_its_audio_stays_in_sync(corpus, tmp_path):
    cap, info = open_video(corpus["offset"])
    cap.release()
    assert info.video_start == pytest.approx(1.0, abs=0.01) and info.audio_start == pytest.approx(0.0, abs=0.01)
    first_t = next(iter_timed_frames(corpus["offset"]))[1]
    assert first_t == pytest.approx(1.0, abs=0.01)
    _timed_copy(corpus["offset"], tmp_path / "synced.mp4", audio_from=corpus["offset"], audio_start=first_t)
    audio = mc.decoded_audio(tmp_path / "synced.mp4")
    onset = np.argmax(np.abs(audio) > 0.3) / 8000
    assert onset == pytest.approx(0.5, abs=0.05)  # the beep at 1.5 s of the source is 0.5 s into its video


def test_audio_a_little_shorter_than_the_video_keeps_every_frame(corpus, tmp_path):
    info, w = _timed_copy(corpus["short_audio"], tmp_path / "out.mp4", audio_from=corpus["short_audio"])
    assert w.with_audio and w.frames == 50 and mc.count_frames(tmp_path / "out.mp4") == 50
    audio_seconds = len(mc.decoded_audio(tmp_path / "out.mp4")) / 8000
    assert audio_seconds == pytest.approx(2.0, abs=0.05)  # padded to the video, not cutting it


def test_sequential_frames_with_short_audio_too(corpus, tmp_path):
    with VideoWriter(tmp_path / "seq.mp4", 25, (64, 64), audio_from=corpus["short_audio"]) as w:
        for frame, _ in iter_timed_frames(corpus["short_audio"]):
            w.write(frame)
    assert w.frames == 50 == mc.count_frames(tmp_path / "seq.mp4")


def test_live_recording_lasts_as_long_as_the_session(tmp_path):
    # 5 frames spread over 10 s (a slow backend drops frames): 10 s of video, each frame held.
    with VideoWriter(tmp_path / "live.mp4", 25, (64, 64)) as w:
        for i, t in enumerate([0.0, 2.0, 4.5, 6.0, 8.0]):
            w.write(np.full((64, 64, 3), 40 * i, np.uint8), t)
        w.close(end=10.0)
    assert w.frames == 250 and mc.count_frames(tmp_path / "live.mp4") == 250
    frames = [f for f, _ in iter_timed_frames(tmp_path / "live.mp4")]
    assert [int(round(frames[int(t * 25)].mean() / 40)) for t in (1.0, 3.0, 5.0, 7.0, 9.9)] == [0, 1, 2, 3, 4]


def test_broken_and_wrong_files_say_what_is_wrong(corpus, tmp_path):
    cases = [
        ("https://example.com/a.mp4", "URLs are not supported"),
        (corpus["audio_only"], r"no video stream \(audio only\)"),
        (corpus["mp3"], "cover art"),
        (corpus["truncated"], "truncated"),
        (corpus["root"], "is a folder"),
    ]
    for path, message in cases:
        with pytest.raises(VideoError, match=message):
            open_video(path)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="finds no video stream"):
        open_video(text)


def test_a_truncated_mp4_with_its_index_at_the_front_is_named(tmp_path):
    """A clip cut short whose index is at the front opens, and decoded 41 of its 100 frames without a word."""
    cut = mc.truncated_front_index(tmp_path / "cut short.mp4")
    assert 0 < mc.count_frames(cut) < 100  # OpenCV decodes what is there
    with pytest.raises(VideoError, match=r"cut short.mp4 is truncated: its index announces 100 frames and only "
                                         r"\d+ are in the file .* ffmpeg -i IN -c copy OUT.mp4"):
        open_video(cut)
    with pytest.raises(VideoError, match="is truncated"):
        read_frames(cut)
    # Cut before its first frame: nothing to keep.
    early = mc.truncated_front_index(tmp_path / "cut early.mp4", keep=0.3)
    with pytest.raises(VideoError, match="cut early.mp4 is truncated: .*the file ends before (its first frame|the "
                                         "first of them)") as caught:
        open_video(early)
    assert "-c copy" not in str(caught.value)


def test_a_clip_that_stops_decoding_before_its_index_says_is_damaged(tmp_path):
    bad = mc.damaged_mid_clip(tmp_path / "damaged.mp4")
    cap, info = open_video(bad)  # whole, as far as its boxes go
    cap.release()
    assert info.indexed and info.frame_count == 100
    with pytest.raises(VideoError, match=r"damaged.mp4 is damaged: its index announces 100 frames and only \d+ "
                                         "could be decoded"):
        read_frames(bad)
    assert len(read_frames(bad, limit=10)) == 10  # a reader that stops early has nothing to complain about


@pytest.mark.parametrize("maker", [mc.raw_h264, mc.durationless_mkv])
def test_frames_are_counted_in_a_file_whose_header_does_not_say(maker, tmp_path):
    """A raw H.264 stream and a duration-less MKV announce no frame count (OpenCV gave a huge negative
    number: every cap on frames let them through) and no duration: the frames are counted in the file."""
    clip = maker(tmp_path / ("clip.h264" if maker is mc.raw_h264 else "clip.mkv"))
    cap, info = open_video(clip)
    cap.release()
    assert (info.frame_count, info.fps, info.duration, info.indexed) == (100, 25.0, pytest.approx(4.0), False)
    assert len(read_frames(clip)) == 100


def test_a_raw_h264_stream_keeps_its_timing(tmp_path):
    """No timestamps in the stream: its frames are timed by its rate (they all read 0 s, so the copy was one
    frame long), at its 25 fps (ffmpeg's tbr says 50)."""
    clip = mc.raw_h264(tmp_path / "clip.h264")
    timed = list(iter_timed_frames(clip))
    assert [t for _, t in timed] == pytest.approx([i / 25 for i in range(100)])
    info, w = _timed_copy(clip, tmp_path / "copy.mp4")
    assert (info.fps, w.frames, w.duration) == (25.0, 100, pytest.approx(4.0))


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((60, 100, 3), np.uint8)
    img[:20, :20] = (0, 0, 255)  # a red mark at the stored top-left (BGR)
    path = mc.exif_rotated_jpeg(tmp_path / "phone photo.jpg", img, orientation=6)
    rgb = load_image(path)
    assert rgb.shape == (100, 60, 3)  # orientation 6: rotate 90 degrees clockwise to display
    top_right = rgb[:20, -20:].mean(axis=(0, 1))
    assert top_right[0] > 0.8 and top_right[1] < 0.2  # the mark is now at the top right, red


def test_big_jpegs_are_decoded_reduced(tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    assert load_image(tmp_path / "big.jpg").shape == (2000, 3000, 3)
    reduced = load_image(tmp_path / "big.jpg", max_side=256)
    assert reduced.shape == (500, 750, 3)  # 1/4; at 1/8 the shorter side (250 px) would be under 256


def test_a_writer_that_was_aborted_does_not_claim_a_file(tmp_path):
    w = VideoWriter(tmp_path / "x.mp4", 25, (64, 64))
    w.write(np.zeros((64, 64, 3), np.uint8))
    w.abort()
    with pytest.raises(VideoError, match="was not written"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_read_frames_of_a_video_file_all_or_the_first_few(corpus):
    clip = corpus["vfr"]
    every = read_frames(clip)
    assert every.dtype == np.uint8 and every.shape == (mc.count_frames(clip), 64, 64, 3)
    np.testing.assert_array_equal(read_frames(clip, limit=2), every[:2])
    with pytest.raises(VideoError, match="truncated"):
        read_frames(corpus["truncated"], limit=2)


def test_read_frames_of_a_folder_reads_each_frame_as_an_image(tmp_path):
    folder = tmp_path / "clip ü"
    folder.mkdir()
    grey = np.full((20, 30), 100, np.uint8)  # small frames are fine: no face has to fit in a frame
    cv2.imwrite(str(folder / "b.png"), grey)
    cv2.imwrite(str(folder / "a.png"), grey.astype(np.uint16) * 257 + 128)  # 16 bit
    cv2.imwrite(str(folder / ".a.png"), np.zeros((20, 30), np.uint8))  # hidden: passed over
    (folder / "c.png").mkdir()  # a folder, not a frame
    (folder / "notes.txt").write_text("not a frame")
    mc.exif_rotated_jpeg(folder / "d.jpg", np.full((30, 20, 3), 200, np.uint8), orientation=6)
    frames = read_frames(folder)
    assert frames.shape == (3, 20, 30, 3) and frames.dtype == np.uint8  # d.jpg is upright: 30 wide
    assert np.all(frames[:2] == 100) and np.abs(frames[2].astype(int) - 200).max() <= 2
    np.testing.assert_array_equal(read_frames(folder, limit=1), frames[:1])
    cv2.imwrite(str(folder / "e.png"), np.zeros((30, 20, 3), np.uint8))
    with pytest.raises(VideoError, match="frames differ in size: a.png is 30x20, e.png is 20x30"):
        read_frames(folder)
    (folder / "e.png").write_text("not a PNG")
    with pytest.raises(ImageError, match="e.png is not an image"):
        read_frames(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="has no frames"):
        read_frames(empty)
