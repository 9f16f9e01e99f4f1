#!/usr/bin/env python3
"""Writes the demo clip's ground-truth tool tracks, for scoring a multi-object tool tracker.

    .venv/bin/python models/synth/clip_tracks.py    # after make_clip.py (build_all.py runs both)

Reads the per-frame label maps make_clip.py saved in models/.cache/clip-labels.npy and the
clip's SCRIPT, and writes models/demo/clip.tracks.json: one track per scripted tool appearance,
numbered 1.. in script order. No two appearances of one kind overlap in time, so a tool class's
pixels in a frame belong to the appearance whose [enter, leave] holds t = frame / fps.

A track lists every frame in which its tool is visible by the timeline's rule (more pixels than
VISIBLE_FRACTION of the frame), each as [frame, cx, cy, x0, y0, x1, y1, area]: the centroid of
the tool's pixels (pixel centres), their bounding box (x0, y0 inclusive, x1, y1 exclusive) and
their share of the frame, in normalized image units (x / width, y / height). A tool that passes
under tissue or leaves the threshold for a while keeps its track; its frames then have a gap.
The path length is the sum of the distances between the centroids of consecutive listed frames,
across any gap, in the same units.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_clip import CACHE, FPS, FRAMES, HEIGHT, OUT, SCRIPT, VISIBLE_FRACTION, WIDTH  # noqa: E402
from scene import ID  # noqa: E402

LABELS = CACHE / "clip-labels.npy"


def check_script() -> None:
    """Two appearances of one kind at the same time would share the class's pixels."""
    for i, a in enumerate(SCRIPT):
        for b in SCRIPT[i + 1:]:
            if a.kind == b.kind and a.enter <= b.leave and b.enter <= a.leave:
                raise SystemExit(f"SCRIPT: two {a.kind} appearances overlap in time "
                                 f"({a.enter}-{a.leave} s and {b.enter}-{b.leave} s)")


def active(kind: str, t: float) -> int | None:
    """Index in SCRIPT of the appearance of this kind that is in the scene at t (as tool_at)."""
    for i, a in enumerate(SCRIPT):
        if a.kind == kind and a.enter <= t <= a.leave:
            return i
    return None


def main() -> None:
    if not LABELS.exists():
        raise SystemExit(f"{LABELS} is missing: run models/synth/make_clip.py first (it writes the clip's "
                         "label maps there)")
    check_script()
    labels = np.load(LABELS, mmap_mode="r")
    if labels.shape != (FRAMES, HEIGHT, WIDTH):
        raise SystemExit(f"{LABELS} has shape {labels.shape}, expected {(FRAMES, HEIGHT, WIDTH)}: "
                         "rerun models/synth/make_clip.py")
    threshold = VISIBLE_FRACTION * WIDTH * HEIGHT
    kinds = sorted({a.kind for a in SCRIPT})
    frames: list[list[list]] = [[] for _ in SCRIPT]
    for f in range(FRAMES):
        lab = np.asarray(labels[f])
        t = f / FPS
        for kind in kinds:
            rows, cols = np.nonzero(lab == ID[kind])
            if rows.size <= threshold:
                continue
            i = active(kind, t)
            if i is None:
                raise SystemExit(f"frame {f}: {kind} visible ({rows.size} pixels) with no appearance in SCRIPT")
            frames[i].append([
                f,
                round(float((cols.mean() + 0.5) / WIDTH), 5),
                round(float((rows.mean() + 0.5) / HEIGHT), 5),
                round(float(cols.min() / WIDTH), 5),
                round(float(rows.min() / HEIGHT), 5),
                round(float((cols.max() + 1) / WIDTH), 5),
                round(float((rows.max() + 1) / HEIGHT), 5),
                round(float(rows.size / (WIDTH * HEIGHT)), 5),
            ])

    tracks = []
    for i, (a, fr) in enumerate(zip(SCRIPT, frames)):
        if not fr:
            raise SystemExit(f"SCRIPT[{i}] ({a.kind} {a.enter}-{a.leave} s) is never visible")
        path = sum(math.dist(p[1:3], q[1:3]) for p, q in zip(fr, fr[1:]))
        tracks.append({
            "id": i + 1,
            "label": a.kind,
            "enter_s": a.enter,
            "leave_s": a.leave,
            "under_tissue": a.behind,
            "first_frame": fr[0][0],
            "last_frame": fr[-1][0],
            "visible_frames": len(fr),
            "path_length": round(path, 5),
            "frames": fr,
        })

    doc = {
        "synthetic": True,
        "note": "Ground-truth tool tracks of the synthetic demo clip, one per scripted tool appearance, "
                "from the label maps rendered by models/synth/make_clip.py (written by "
                "models/synth/clip_tracks.py); not real surgery.",
        "video": "clip.mp4",
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "units": "normalized image coordinates: x / width, y / height (0..1); distances in those units",
        "visibility": {
            "rule": "a track lists a frame when its tool's ground-truth pixel count in the "
                    f"{WIDTH}x{HEIGHT} label map exceeds visible_fraction of the frame's pixels "
                    "(as in clip.timeline.json)",
            "visible_fraction": VISIBLE_FRACTION,
        },
        "frame_fields": ["frame", "cx", "cy", "x0", "y0", "x1", "y1", "area"],
        "frame_fields_note": "cx, cy: centroid of the tool's pixels (pixel centres, (col + 0.5) / width); "
                             "x0, y0, x1, y1: their bounding box, min col / width to (max col + 1) / width; "
                             "area: their fraction of the frame",
        "path_length_rule": "sum of the distances between the centroids of consecutive listed frames, across gaps",
        "tracks": tracks,
    }
    # one frame per line: join each innermost list (no nested brackets or objects) onto one line
    text = re.sub(r"\[\n\s+([^\[\]{}]+?)\n\s*\]",
                  lambda m: "[" + ", ".join(re.split(r",\n\s*", m.group(1))) + "]", json.dumps(doc, indent=1))
    path = OUT / "clip.tracks.json"
    path.write_text(text + "\n")
    for tr in tracks:
        print(f"  {tr['id']} {tr['label']:13s} frames {tr['first_frame']:3d}-{tr['last_frame']:3d} "
              f"({tr['visible_frames']:3d} visible), path length {tr['path_length']:.3f}")
    print(f"wrote {path} ({len(tracks)} tracks)", flush=True)


if __name__ == "__main__":
    main()
