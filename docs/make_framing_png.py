"""Make docs/framing.png: source | driving (with its clip box) | result | paste-back, frame 7 of 30.

Run from the repository root with the venv's python, after exporting the bundled model:
    python docs/make_framing_png.py EXPORT_DIR WORK_DIR
(EXPORT_DIR = run_export(checkpoints/synthetic-faces.pth.tar, resolve_config("synthetic-faces"), ...)).
The animation is fomm-animate's own output; this script only makes the clip and lays out the panels.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fomm_deploy.runtime.media.video import VideoWriter, iter_frames  # noqa: E402
from tests.runtime.media.test_framing import moving_clip  # noqa: E402

FRAME = 7


def main(export: str, work: str) -> None:
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    driving = work_dir / "driving.mp4"
    with VideoWriter(driving, 10, (640, 360), crf=12) as w:
        for f, _ in moving_clip(30, seed=3, max_angle=20, scale=0.6):
            w.write(f)
    animate = str(Path(sys.executable).parent / "fomm-animate")
    common = ["--source", "tests/data/astronaut.png", "--driving", str(driving), "--onnx", export]
    sbs = subprocess.run([animate, *common, "--out", f"{work_dir}/sbs/", "--side-by-side", "--size", "256"],
                         check=True, capture_output=True, text=True)
    subprocess.run([animate, *common, "--out", f"{work_dir}/paste/", "--paste-back"], check=True)
    boxes = {what: tuple(int(v) for v in re.search(rf"{what}.*?: x=(-?\d+) y=(-?\d+) side=(\d+)", sbs.stderr).groups())
             for what in ("driving crop", "source crop")}
    drv = list(iter_frames(driving))[FRAME][..., ::-1].copy()
    x, y, s = boxes["driving crop"]
    cv2.rectangle(drv, (x, y), (x + s, y + s), (0, 200, 255), 3)
    drv = cv2.resize(drv, (455, 256), interpolation=cv2.INTER_AREA)
    src = cv2.imread("tests/data/astronaut.png")
    x, y, s = boxes["source crop"]
    cv2.rectangle(src, (x, y), (x + s, y + s), (0, 200, 255), 3)
    src = cv2.resize(src, (256, 256), interpolation=cv2.INTER_AREA)
    result = cv2.imread(f"{work_dir}/sbs/frame_{FRAME:06d}.png")[:, 512:]
    paste = cv2.resize(cv2.imread(f"{work_dir}/paste/frame_{FRAME:06d}.png"), (256, 256), interpolation=cv2.INTER_AREA)
    panels = []
    for img, label in ((src, "source + its face crop"), (drv, "driving + its one clip box"),
                       (result, "result (--size 256)"), (paste, "--paste-back")):
        bar = np.full((28, img.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        panels += [np.vstack([bar, img]), np.full((284, 6, 3), 255, np.uint8)]
    cv2.imwrite("docs/framing.png", np.hstack(panels[:-1]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
