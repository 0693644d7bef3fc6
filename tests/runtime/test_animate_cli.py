"""End to end: fomm-export, then fomm-animate on a generated MP4 with audio; every user error is one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fomm_deploy.runtime.core.compare import psnr
from fomm_deploy.runtime.graphs import load_exported, open_animator
from fomm_deploy.runtime.media.preprocess import load_source, prepare_frame
from fomm_deploy.runtime.media.samples import head_motion, sample_face
from fomm_deploy.runtime.media.video import VideoWriter, ffmpeg_exe, has_audio, iter_frames, open_video
from tests import media_corpus as mc

FPS = 20
N_FRAMES = 12


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed; run the README set-up (make setup)"
    return str(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    face = sample_face()
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={N_FRAMES / FPS}", str(root / "tone.wav")], check=True)
    frames = head_motion(cv2.resize(face, (200, 160)), N_FRAMES, seed=2)  # not square, not model-sized
    with VideoWriter(root / "driving.mp4", FPS, (200, 160), audio_from=root / "tone.wav") as w:
        for f in frames:
            w.write(np.rint(f * 255).astype(np.uint8))
    with VideoWriter(root / "silent.mp4", FPS, (200, 160)) as w:
        for f in frames[:4]:
            w.write(np.rint(f * 255).astype(np.uint8))
    cv2.imwrite(str(root / "source.png"), np.rint(face[..., ::-1] * 255).astype(np.uint8))
    (root / "notes.txt").write_text("not media")
    return root


def _animate(*args, cwd):
    return subprocess.run([_script("fomm-animate"), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_driving_fixture_has_audio(media):
    assert has_audio(media / "driving.mp4") and not has_audio(media / "silent.mp4")


@pytest.mark.parametrize("extra, width", [((), 128), (("--side-by-side", "--batch", "5", "--no-adapt-scale"), 384)])
def test_animate_writes_playable_mp4_with_audio(tmp_path, media, golden_export, extra, width):
    out = tmp_path / "result.mp4"
    res = _animate("--source", media / "source.png", "--driving", media / "driving.mp4", "--out", out,
                   "--onnx", golden_export, "--crop", "centre", *extra, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{N_FRAMES} frames ({N_FRAMES / FPS:.2f} s at {FPS:.2f} fps)" in res.stdout and "with audio" in res.stdout
    cap, info = open_video(out)
    cap.release()
    assert (info.width, info.height) == (width, 128) and info.fps == pytest.approx(FPS)
    frames = list(iter_frames(out))
    assert len(frames) == N_FRAMES
    assert has_audio(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mp4"]  # no temporary files left
    assert frames[0].dtype == np.uint8 and frames[0].std() > 1
    result = np.stack([f[:, -128:] for f in frames])  # with --side-by-side, the result is the right third
    _assert_is_the_animation(result, media, golden_export, adapt_scale="--no-adapt-scale" not in extra)


def test_still_is_the_middle_frame_of_the_output(tmp_path, media, golden_export):
    """--still writes, as a PNG, exactly the frame the output has in the middle of the clip (here a folder of PNG
    frames, so that the comparison is exact), at --size per side-by-side panel."""
    frames = tmp_path / "frames"
    still = tmp_path / "still.png"
    common = ["--source", media / "source.png", "--driving", media / "driving.mp4", "--onnx", golden_export,
              "--crop", "centre", "--side-by-side", "--size", "96"]
    res = _animate(*common, "--out", f"{frames}/", "--still", still, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"frame {N_FRAMES // 2} as {still}" in res.stdout, res.stdout
    written = sorted(frames.glob("*.png"))
    assert len(written) == N_FRAMES
    picture = cv2.imread(str(still))
    assert picture.shape == (96, 3 * 96, 3)
    np.testing.assert_array_equal(picture, cv2.imread(str(written[N_FRAMES // 2])))
    assert not np.array_equal(picture, cv2.imread(str(written[0])))  # the middle, not the first frame
    # One-line errors, before any work: an existing --still without --force, not a PNG, a --source folder.
    for extra, message in ((["--out", tmp_path / "o.mp4"], f"--still {still} already exists; pass --force"),
                           (["--source", media, "--out", tmp_path / "outs"], "--still writes one frame of one output")):
        res = _animate(*common, "--still", still, *extra, cwd=tmp_path)
        lines = res.stderr.splitlines()
        assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {message}"), res.stderr
    res = _animate(*common, "--out", tmp_path / "o.mp4", "--still", tmp_path / "still.jpg", cwd=tmp_path)
    assert res.returncode == 1 and "--still must end in .png, got still.jpg" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "still.png"]


def _in_process_animation(media: Path, onnx_dir: Path, adapt_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the animation of source.png by driving.mp4, the still source), both (128, 128, 3) uint8 frames,
    computed here through the Animator with fomm-animate's default backend, precision and graphs."""
    exported = load_exported(onnx_dir)
    animator = open_animator(exported, "onnxruntime", "fp32", relative=True, adapt_scale=adapt_scale, fit="crop")
    animator.set_source(load_source(media / "source.png"))
    driving = np.stack([prepare_frame(f, exported.frame_size, fit="crop") for f in iter_frames(media / "driving.mp4")])
    return animator.animate_prepared(driving), animator.source_uint8()


def _assert_is_the_animation(result: np.ndarray, media: Path, onnx_dir: Path, *, adapt_scale: bool) -> None:
    """The written frames are the animation (within H.264 loss), not the source or any other still image."""
    expected, still = _in_process_animation(media, onnx_dir, adapt_scale)
    assert result.shape == expected.shape
    # H.264 (crf 18, yuv420p: chroma at half resolution) on the random-weight model's noisy frames: measured
    # 27.7-28.9 dB per frame against the in-process animation (255 peak), and 9.3-9.6 dB against the still
    # source. Writing the source instead of the result fails both checks.
    per_frame = [psnr(r, e, peak=255) for r, e in zip(result, expected)]
    assert min(per_frame) > 25, per_frame
    to_source = [psnr(r, still, peak=255) for r in result]
    assert max(to_source) < min(per_frame) - 10, (to_source, per_frame)
    # The motion follows the driving video: the animated frames change from frame to frame.
    assert np.abs(np.diff(expected.astype(np.int16), axis=0)).mean() > 1


def test_animate_without_audio_and_fp16(tmp_path, media, golden_export):
    out = tmp_path / "r.mp4"
    res = _animate("--source", media / "source.png", "--driving", media / "silent.mp4", "--out", out,
                   "--onnx", golden_export, "--precision", "fp16", "--absolute", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "no audio in the driving video" in res.stdout and not has_audio(out)
    assert len(list(iter_frames(out))) == 4


def test_best_frame_on_a_known_clip(tmp_path, media, golden_export):
    """Frame 6 of this clip is the source image itself: --best-frame must pick it."""
    face = cv2.resize(sample_face(), (128, 128), interpolation=cv2.INTER_AREA)
    frames = head_motion(face, 11, seed=5, max_angle=25, max_shift=0.2, max_zoom=0.2)[1:]  # all moved
    frames[6] = face
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 10, (128, 128), crf=0) as w:
        for f in frames:
            w.write(np.rint(f * 255).astype(np.uint8))
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), np.rint(face[..., ::-1] * 255).astype(np.uint8))
    res = _animate("--source", src, "--driving", clip, "--out", tmp_path / "o.mp4", "--onnx", golden_export,
                   "--best-frame", "--batch", "3", "--crop", "centre", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "best frame: 6" in res.stderr


def test_runtime_cli_path_imports_no_torch(tmp_path, media, golden_export):
    code = (
        "import sys\n"
        "from fomm_deploy.runtime.cli import animate_main\n"
        f"args = ['--source', {str(media / 'source.png')!r}, '--driving', {str(media / 'silent.mp4')!r},"
        f" '--out', {str(tmp_path / 'x.mp4')!r}, '--onnx', {str(golden_export)!r}]\n"
        "animate_main.main(args, standalone_mode=False)\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported'\n"
        "print('no torch')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    assert "no torch" in res.stdout


@pytest.mark.parametrize("case, message", [
    ("missing-source", "image not found"),
    ("bad-source", "is not an image"),
    ("missing-driving", "video not found"),
    ("bad-driving", "not a video OpenCV can read"),
    ("text-as-mp4", "not a video OpenCV can read"),  # OpenCV's FFmpeg would add "moov atom not found" lines
    ("truncated", "is truncated"),
    ("no-export", "no export folder"),
    ("not-mp4", "--out must end in .mp4"),
    ("no-fp16", "export with --precision fp16"),
    ("audio-only", "has no video stream (audio only)"),
])
def test_user_errors_are_one_line_and_leave_no_file(tmp_path, media, golden_export, case, message):
    args = {"--source": media / "source.png", "--driving": media / "driving.mp4", "--out": tmp_path / "o.mp4",
            "--onnx": golden_export}
    override = {"missing-source": ("--source", tmp_path / "nope.png"),
                "bad-source": ("--source", media / "notes.txt"),
                "missing-driving": ("--driving", tmp_path / "nope.mp4"),
                "bad-driving": ("--driving", media / "notes.txt"),
                "no-export": ("--onnx", tmp_path / "nothing"),
                "not-mp4": ("--out", tmp_path / "o.avi"),
                "audio-only": ("--driving", tmp_path / "audio-only.mp4"),
                "text-as-mp4": ("--driving", tmp_path / "notes.mp4"),
                "truncated": ("--driving", tmp_path / "cut off.mp4")}.get(case)
    if override:
        args[override[0]] = override[1]
    if case == "audio-only":  # an .mp4 without a single video frame
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(media / "tone.wav"), "-c:a", "aac",
                        str(args["--driving"])], check=True)
    if case == "text-as-mp4":
        (tmp_path / "notes.mp4").write_text("not a video")
    if case == "truncated":
        mc.truncated(tmp_path / "cut off.mp4", tmp_path)
    extra = []
    if case == "no-fp16":
        fp32_only = tmp_path / "fp32"
        fp32_only.mkdir()
        for name in ("kp_detector.onnx", "generator.onnx", "manifest.json"):
            (fp32_only / name).write_bytes((golden_export / name).read_bytes())
        args["--onnx"] = fp32_only
        extra = ["--precision", "fp16"]
    flat = [x for kv in args.items() for x in kv] + extra
    res = _animate(*flat, cwd=tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()  # exactly one line: nothing from FFmpeg or OpenCV before it
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert re.search(re.escape(message), lines[0]), lines[0]
    assert not (tmp_path / "o.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial output either


def test_compare_cli_torch_vs_onnxruntime(golden_export, tmp_path):
    res = subprocess.run([_script("fomm-compare"), "--onnx", str(golden_export)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "all outputs within tolerance" in res.stdout and "PSNR" in res.stdout


def test_compare_cli_over_budget_exits_non_zero(golden_export, tmp_path):
    # fp16 graphs judged against fp32 ONNX Runtime pass; the same comparison on random noise with the fp32
    # table would not, which is what a wrong --precision looks like.
    ok = subprocess.run([_script("fomm-compare"), "--onnx", str(golden_export), "--backends",
                         "onnxruntime,onnxruntime", "--precision", "fp16"], capture_output=True, text=True,
                        timeout=600, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    fp16_dir = tmp_path / "mislabelled"
    fp16_dir.mkdir()
    for name in ("kp_detector", "generator"):  # fp16 graphs under the fp32 names
        (fp16_dir / f"{name}.onnx").write_bytes((golden_export / f"{name}.fp16.onnx").read_bytes())
    (fp16_dir / "manifest.json").write_bytes((golden_export / "manifest.json").read_bytes())
    # The manifest's sha256 names the swapped graphs first ...
    swapped = subprocess.run([_script("fomm-compare"), "--onnx", str(fp16_dir), "--inputs", "random"],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert swapped.returncode == 1 and "generator.onnx is not the graph this export wrote" in swapped.stderr
    # ... and with a manifest that records them, the comparison itself shows the difference.
    import hashlib
    import json

    manifest = json.loads((fp16_dir / "manifest.json").read_text())
    for name in ("kp_detector", "generator"):
        manifest["graphs"][name]["sha256"] = hashlib.sha256((fp16_dir / f"{name}.onnx").read_bytes()).hexdigest()
    (fp16_dir / "manifest.json").write_text(json.dumps(manifest))
    bad = subprocess.run([_script("fomm-compare"), "--onnx", str(fp16_dir), "--inputs", "random"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert bad.returncode != 0
    assert "OVER" in bad.stdout and "outputs differ beyond tolerance" in bad.stderr


def test_compare_takes_the_benchmarks_backend_grammar(golden_export, tmp_path):
    """--backends is backend[:precision] items in fomm-compare as in fomm-bench: onnxruntime,onnxruntime:fp16 is
    the comparison --backends onnxruntime,onnxruntime --precision fp16 makes (the old spelling still works)."""
    runs = [subprocess.run([_script("fomm-compare"), "--onnx", str(golden_export), "--batch", "1", *args],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
            for args in (("--backends", "onnxruntime,onnxruntime:fp16"),
                         ("--backends", "onnxruntime,onnxruntime", "--precision", "fp16"),
                         ("--backends", "onnxruntime:fp32,onnxruntime:fp16", "--precision", "fp16"))]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout.startswith("onnxruntime (reference) vs onnxruntime (fp16)"), runs[0].stdout
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout


@pytest.mark.parametrize("backends, extra, message", [
    ("onnxruntime:fp16,onnxruntime", (), "the first backend is the reference and runs fp32; name the other "
                                         "precision on the second (--backends onnxruntime,onnxruntime:fp16)"),
    ("onnxruntime,tensorrt:fp16", ("--precision", "fp32"), "runs tensorrt at fp16, --precision asks for fp32"),
    ("torch,onnxruntime,tensorrt", (), "exactly two backend[:precision] items"),
    ("onnxruntime,onnxruntime:int4", (), "--backends item 'onnxruntime:int4': unknown precision 'int4'"),
])
def test_compare_refuses_a_backend_list_it_cannot_compare_in_one_line(tmp_path, backends, extra, message):
    # The export folder does not exist: the list is refused before anything is read.
    res = subprocess.run([_script("fomm-compare"), "--onnx", str(tmp_path / "none"), "--backends", backends, *extra],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr


def test_source_may_be_a_video(tmp_path, media, golden_export):
    res = _animate("--source", media / "silent.mp4", "--driving", media / "silent.mp4", "--out", tmp_path / "v.mp4",
                   "--onnx", golden_export, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(list(iter_frames(tmp_path / "v.mp4"))) == 4


# ---- framing, paste-back, formats, many portraits (issue #15) ---------------------------------------------

CLIP_FPS, CLIP_FRAMES, CLIP_SIZE = 10, 12, (320, 180)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """An off-centre astronaut face swaying and drifting in a 16:9 clip with audio, the true faces, and the
    portrait (astronaut.png shrunk to 256x256)."""
    from tests.runtime.media.test_framing import astronaut, moving_clip

    root = tmp_path_factory.mktemp("face_clip")
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=330:duration={CLIP_FRAMES / CLIP_FPS}", str(root / "tone.wav")], check=True)
    frames = list(moving_clip(CLIP_FRAMES, size=CLIP_SIZE, scale=0.45, max_angle=15))
    with VideoWriter(root / "driving.mp4", CLIP_FPS, CLIP_SIZE, audio_from=root / "tone.wav", crf=12) as w:
        for frame, _ in frames:
            w.write(frame)
    cv2.imwrite(str(root / "portrait.png"), cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)[..., ::-1])
    return root, [t for _, t in frames]


def _box(stderr: str, what: str) -> tuple[int, int, int]:
    m = re.search(rf"{what}.*?: x=(-?\d+) y=(-?\d+) side=(\d+)", stderr)
    assert m, stderr
    return tuple(int(v) for v in m.groups())


def _holds(box, face) -> bool:
    x, y, s = box
    cx, cy, side = face
    return x <= cx - side / 2 and y <= cy - side / 2 and cx + side / 2 <= x + s and cy + side / 2 <= y + s


def test_auto_crop_is_where_the_face_is(tmp_path, face_clip, golden_export):
    root, faces = face_clip
    out = tmp_path / "r.mp4"
    res = _animate("--source", root / "portrait.png", "--driving", root / "driving.mp4", "--out", out,
                   "--onnx", golden_export, "--batch", "4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    box = _box(res.stderr, "driving crop")
    assert all(_holds(box, f) for f in faces)  # one box holds the face in every frame ...
    x, y, s = box
    assert x + s / 2 > CLIP_SIZE[0] / 2 + 40 and s < CLIP_SIZE[1]  # ... off centre, smaller than the centre square
    assert "around the face's positions" in res.stderr
    # The portrait's face (astronaut.png's face scaled by 0.5) is in the source crop.
    assert _holds(_box(res.stderr, "source crop"), (112.4, 56.4, 48.8))
    assert len(list(iter_frames(out))) == CLIP_FRAMES and has_audio(out)


def test_follow_crop_and_no_face_fallback(tmp_path, face_clip, golden_export):
    root, faces = face_clip
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8))
    res = _animate("--source", noise, "--driving", root / "driving.mp4", "--out", tmp_path / "f.mp4",
                   "--onnx", golden_export, "--crop", "follow", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "it follows the face" in res.stderr
    assert res.stderr.count("no face found") == 1 and _box(res.stderr, "source crop") == (32, 0, 96)
    assert _holds(_box(res.stderr, "driving crop"), faces[0])


def test_paste_back_has_the_source_size_and_keeps_it_outside_the_head(tmp_path, face_clip, golden_export):
    root, _ = face_clip
    out = tmp_path / "frames"
    res = _animate("--source", root / "portrait.png", "--driving", root / "driving.mp4", "--out", f"{out}/",
                   "--onnx", golden_export, "--paste-back", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    x, y, s = _box(res.stderr, "source crop")
    source = cv2.imread(str(root / "portrait.png"))
    frames = sorted(out.iterdir())
    assert len(frames) == CLIP_FRAMES and "256x256" in res.stdout
    outside = np.ones((256, 256), bool)
    outside[max(0, y):y + s, max(0, x):x + s] = False
    assert outside.sum() > 256 * 256 / 3  # the head region is a part of the portrait, not all of it
    for path in frames:
        frame = cv2.imread(str(path))
        assert frame.shape == source.shape
        np.testing.assert_array_equal(frame[outside], source[outside])
        assert np.abs(frame[y + s // 2, x + s // 4: x + 3 * s // 4].astype(int) - source[y + s // 2, x + s // 4: x + 3 * s // 4]).mean() > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # the staging folder is gone


@pytest.mark.parametrize("name, audio", [("r.webm", True), ("r.gif", False), ("frames/", False)])
def test_each_format_plays_back(tmp_path, media, golden_export, name, audio):
    res = _animate("--source", media / "source.png", "--driving", media / "driving.mp4", "--out", f"{tmp_path}/{name}",
                   "--onnx", golden_export, "--crop", "centre", "--size", "96", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / name
    if name.endswith("/"):
        frames = [cv2.imread(str(p)) for p in sorted(out.iterdir())]
        assert all(p.suffix == ".png" for p in out.iterdir())
    else:
        frames = list(iter_frames(out))
        assert has_audio(out) == audio
        probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
        if name.endswith(".webm"):
            assert "Video: vp9" in probe and "Audio: opus" in probe, probe
        else:
            assert "Video: gif" in probe and b"NETSCAPE2.0" in out.read_bytes()  # the loop-for-ever extension
    assert len(frames) == N_FRAMES and frames[0].shape == (96, 96, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name.rstrip("/")]


def test_window_reference_frame_and_no_audio(tmp_path, media, golden_export):
    out = tmp_path / "w.mp4"
    res = _animate("--source", media / "source.png", "--driving", media / "driving.mp4", "--out", out,
                   "--onnx", golden_export, "--start", "0.1", "--end", "0.4", "--reference-frame", "2",
                   "--no-audio", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "reference frame: 2" in res.stderr and "no audio" in res.stdout
    assert len(list(iter_frames(out))) == 6 and not has_audio(out)  # 0.1 <= t < 0.4 at 20 fps
    bad = _animate("--source", media / "source.png", "--driving", media / "driving.mp4", "--out", tmp_path / "b.mp4",
                   "--onnx", golden_export, "--reference-frame", "50", cwd=tmp_path)
    assert bad.returncode == 1 and "only 12 frames" in bad.stderr and not (tmp_path / "b.mp4").exists()


def test_source_folder_gives_one_output_per_portrait(tmp_path, face_clip, media, golden_export):
    root, _ = face_clip
    portraits = tmp_path / "portraits"
    portraits.mkdir()
    (portraits / "astro.png").write_bytes((root / "portrait.png").read_bytes())
    (portraits / "sample.png").write_bytes((media / "source.png").read_bytes())
    (portraits / "notes.txt").write_text("not a portrait")
    res = _animate("--source", portraits, "--driving", root / "driving.mp4", "--out", tmp_path / "results",
                   "--onnx", golden_export, "--format", "gif", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["astro.gif", "sample.gif"]
    assert res.stdout.count("wrote ") == 2 and res.stderr.count("driving crop") == 1  # detected once
    assert all(len(list(iter_frames(p))) == CLIP_FRAMES for p in (tmp_path / "results").iterdir())


def test_source_folder_of_images_and_videos(tmp_path, media, golden_export):
    portraits = mc.mixed_portrait_folder(tmp_path / "portraits")
    res = _animate("--source", portraits, "--driving", media / "silent.mp4", "--out", tmp_path / "results",
                   "--onnx", golden_export, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["a.mp4", "b.mp4"]
    # the video's portrait is its first frame: the face is found there (its other frames are black)
    assert re.search(r"source crop b\.mp4: .*\(face\)", res.stderr), res.stderr
    assert res.stdout.index("results/a.mp4") < res.stdout.index("results/b.mp4")  # by name


@pytest.mark.parametrize("junk", [(), ("notes.txt", ".hidden.png")])
def test_source_folder_without_portraits_is_a_one_line_error(tmp_path, media, golden_export, junk):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in junk:
        (empty / name).write_bytes(b"junk")
    res = _animate("--source", empty, "--driving", media / "silent.mp4", "--out", tmp_path / "results",
                   "--onnx", golden_export, cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: --source folder {empty} holds no image or video"), lines
    assert not (tmp_path / "results").exists()


# ---- fomm-animate as a function (runtime/animate.py): what other front-ends call ---------------------------


def test_animate_function_writes_and_reports_like_the_command(tmp_path, media, golden_export, capsys):
    from fomm_deploy.runtime.animate import AnimateOptions, animate

    logged, announced = [], []
    options = AnimateOptions(onnx_dir=golden_export, crop="centre", batch=5)
    written = animate(media / "source.png", media / "driving.mp4", tmp_path / "f.mp4", options, log=logged.append,
                      on_output=announced.append)
    assert announced == written and len(written) == 1
    (result,) = written
    assert (result.path, result.frames, result.driving_frames, result.size) == (str(tmp_path / "f.mp4"), N_FRAMES,
                                                                               N_FRAMES, (128, 128))
    assert result.sound == "with audio" and result.duration == pytest.approx(N_FRAMES / FPS)
    assert result.summary().startswith(f"wrote {tmp_path / 'f.mp4'}: {N_FRAMES} frames ({N_FRAMES / FPS:.2f} s at "
                                       f"{FPS:.2f} fps) from {N_FRAMES} driving frames, 128x128, with audio; ")
    assert len(list(iter_frames(tmp_path / "f.mp4"))) == N_FRAMES and has_audio(tmp_path / "f.mp4")
    assert [m.split(":")[0] for m in logged] == ["driving crop", "source crop source.png"]
    assert capsys.readouterr() == ("", "")  # it prints nothing itself: its messages go to log


def test_animate_function_raises_input_errors(tmp_path, media, golden_export):
    from fomm_deploy.runtime.animate import AnimateOptions, animate
    from fomm_deploy.runtime.core.errors import InputError

    with pytest.raises(InputError, match="--end 0.2 must be after --start 0.5"):
        animate(media / "source.png", media / "driving.mp4", tmp_path / "f.mp4",
                AnimateOptions(onnx_dir=golden_export, start=0.5, end=0.2))
    # What fomm-serve passes on from its form: nan and inf are no times (end=nan skipped the clip's end).
    for start, end in ((float("nan"), None), (0.0, float("nan")), (float("inf"), None), (0.0, float("inf"))):
        with pytest.raises(InputError, match="is not a time in seconds"):
            animate(media / "source.png", media / "driving.mp4", tmp_path / "f.mp4",
                    AnimateOptions(onnx_dir=golden_export, start=start, end=end))
    assert list(tmp_path.iterdir()) == []


# ---- the portrait framed as in every command (issue #26) ----------------------------------------------------


def test_astronaut_is_framed_around_its_face_as_in_every_command(tmp_path, media, golden_export):
    """The whole 512 px photo (suit, flag, shuttle) is not squeezed into the model's frame: the source is the
    box around its face that fomm-live and fomm-serve give too (tests/runtime/test_live.py, test_serve.py)."""
    from tests.runtime.media.test_framing import ASTRONAUT, ASTRONAUT_MESSAGE, portrait_distances

    out = tmp_path / "frames"
    res = _animate("--source", ASTRONAUT, "--driving", media / "silent.mp4", "--out", f"{out}/", "--onnx",
                   golden_export, "--side-by-side", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert ASTRONAUT_MESSAGE in res.stderr.splitlines(), res.stderr
    first = cv2.imread(str(sorted(out.iterdir())[0]))[..., ::-1]
    to_framed, to_squeezed = portrait_distances(first[:, :128])  # the source panel: what the model was given
    assert to_framed < 2 and to_squeezed > 20, (to_framed, to_squeezed)
