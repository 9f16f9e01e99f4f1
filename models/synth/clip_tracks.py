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

Clips in which two appearances of one kind do overlap in time (the evaluation sets, eval_set.py)
pass per-instance maps as well (scene.render(..., instances=True)): a tool's pixels then belong to
the appearance whose instrument drew them, and each appearance's frames are its own pixels.
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


def check_script(script=SCRIPT) -> None:
    """Two appearances of one kind at the same time would share the class's pixels."""
    for i, a in enumerate(script):
        for b in script[i + 1:]:
            if a.kind == b.kind and a.enter <= b.leave and b.enter <= a.leave:
                raise SystemExit(f"SCRIPT: two {a.kind} appearances overlap in time "
                                 f"({a.enter}-{a.leave} s and {b.enter}-{b.leave} s)")


def active(kind: str, t: float, script=SCRIPT) -> int | None:
    """Index in the script of the appearance of this kind that is in the scene at t (as tool_at)."""
    for i, a in enumerate(script):
        if a.kind == kind and a.enter <= t <= a.leave:
            return i
    return None


def frame_entry(f: int, rows: np.ndarray, cols: np.ndarray, width: int, height: int) -> list:
    """One listed frame of a track from its tool's pixel rows / columns:
    [frame, cx, cy, x0, y0, x1, y1, area] in normalized image units."""
    return [
        f,
        round(float((cols.mean() + 0.5) / width), 5),
        round(float((rows.mean() + 0.5) / height), 5),
        round(float(cols.min() / width), 5),
        round(float(rows.min() / height), 5),
        round(float((cols.max() + 1) / width), 5),
        round(float((rows.max() + 1) / height), 5),
        round(float(rows.size / (width * height)), 5),
    ]


def build_tracks(labels, script, fps: int, width: int, height: int, video: str, note: str,
                 visible_fraction: float = VISIBLE_FRACTION, instances=None) -> dict:
    """The tracks document of a clip from its label maps [frames, height, width] and its script
    of tool appearances. With `instances` (maps of the same shape holding 1 + the script index of
    the appearance that drew each tool pixel, 0 elsewhere) appearances of one kind may overlap in
    time: each one's pixels are its own."""
    if instances is None:
        check_script(script)
    frames_n = labels.shape[0]
    threshold = visible_fraction * width * height
    kinds = sorted({a.kind for a in script})
    frames: list[list[list]] = [[] for _ in script]
    for f in range(frames_n):
        if instances is not None:
            ins = np.asarray(instances[f])
            for i in range(len(script)):
                rows, cols = np.nonzero(ins == i + 1)
                if rows.size > threshold:
                    frames[i].append(frame_entry(f, rows, cols, width, height))
            continue
        lab = np.asarray(labels[f])
        t = f / fps
        for kind in kinds:
            rows, cols = np.nonzero(lab == ID[kind])
            if rows.size <= threshold:
                continue
            i = active(kind, t, script)
            if i is None:
                raise SystemExit(f"frame {f}: {kind} visible ({rows.size} pixels) with no appearance in SCRIPT")
            frames[i].append(frame_entry(f, rows, cols, width, height))
    return tracks_document(script, frames, fps, width, height, video, note, visible_fraction)


def tracks_document(script, frames: list[list[list]], fps: int, width: int, height: int, video: str, note: str,
                    visible_fraction: float = VISIBLE_FRACTION) -> dict:
    """The tracks document from each scripted appearance's listed frames (frame_entry rows)."""
    tracks = []
    for i, (a, fr) in enumerate(zip(script, frames)):
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

    return {
        "synthetic": True,
        "note": note,
        "video": video,
        "fps": fps,
        "width": width,
        "height": height,
        "units": "normalized image coordinates: x / width, y / height (0..1); distances in those units",
        "visibility": {
            "rule": "a track lists a frame when its tool's ground-truth pixel count in the "
                    f"{width}x{height} label map exceeds visible_fraction of the frame's pixels "
                    "(as in clip.timeline.json)",
            "visible_fraction": visible_fraction,
        },
        "frame_fields": ["frame", "cx", "cy", "x0", "y0", "x1", "y1", "area"],
        "frame_fields_note": "cx, cy: centroid of the tool's pixels (pixel centres, (col + 0.5) / width); "
                             "x0, y0, x1, y1: their bounding box, min col / width to (max col + 1) / width; "
                             "area: their fraction of the frame",
        "path_length_rule": "sum of the distances between the centroids of consecutive listed frames, across gaps",
        "tracks": tracks,
    }


def write_tracks(doc: dict, path: Path) -> None:
    # one frame per line: join each innermost list (no nested brackets or objects) onto one line
    text = re.sub(r"\[\n\s+([^\[\]{}]+?)\n\s*\]",
                  lambda m: "[" + ", ".join(re.split(r",\n\s*", m.group(1))) + "]", json.dumps(doc, indent=1))
    path.write_text(text + "\n")
    for tr in doc["tracks"]:
        print(f"  {tr['id']} {tr['label']:13s} frames {tr['first_frame']:3d}-{tr['last_frame']:3d} "
              f"({tr['visible_frames']:3d} visible), path length {tr['path_length']:.3f}")
    print(f"wrote {path} ({len(doc['tracks'])} tracks)", flush=True)


def main() -> None:
    if not LABELS.exists():
        raise SystemExit(f"{LABELS} is missing: run models/synth/make_clip.py first (it writes the clip's "
                         "label maps there)")
    labels = np.load(LABELS, mmap_mode="r")
    if labels.shape != (FRAMES, HEIGHT, WIDTH):
        raise SystemExit(f"{LABELS} has shape {labels.shape}, expected {(FRAMES, HEIGHT, WIDTH)}: "
                         "rerun models/synth/make_clip.py")
    doc = build_tracks(labels, SCRIPT, FPS, WIDTH, HEIGHT, "clip.mp4",
                       "Ground-truth tool tracks of the synthetic demo clip, one per scripted tool appearance, "
                       "from the label maps rendered by models/synth/make_clip.py (written by "
                       "models/synth/clip_tracks.py); not real surgery.")
    write_tracks(doc, OUT / "clip.tracks.json")


if __name__ == "__main__":
    main()
