#!/usr/bin/env python3
"""Runs the exported demo model on the decoded demo clip and compares it with the ground truth.

    .venv/bin/python models/eval_clip.py      # after make_clip.py and train.py

The clip is decoded from its H.264 MP4 (so compression is included), each 640x360 frame is
stretched to the card's 320x192 (bilinear, antialiased), normalised with the card's mean/std and
run through models/demo/seg.pt; the logits are resized back to 640x360 and compared with the
label maps make_clip.py saved in models/.cache/clip-labels.npy. Writes the "clip" section of
models/demo/metrics.json: per-class IoU over all frames, and per class how many frames the
model's presence (area above the timeline's threshold) agrees with the ground-truth timeline's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))

from make_clip import decode_frames  # noqa: E402
from scene import CATEGORY, NAMES, NUM_CLASSES  # noqa: E402
from train import HEIGHT, MEAN, STD, WIDTH, confusion, summarise  # noqa: E402

DEMO = HERE / "demo"


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    t0 = time.time()
    timeline = json.loads((DEMO / "clip.timeline.json").read_text())
    w, h, n = timeline["width"], timeline["height"], timeline["frame_count"]
    frac = timeline["visibility"]["visible_fraction"]
    labels = np.load(HERE / ".cache" / "clip-labels.npy", mmap_mode="r")
    model = torch.jit.load(str(DEMO / "seg.pt"), map_location="cpu").eval()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    pred_area = np.zeros((n, NUM_CLASSES), np.int64)
    gt_area = np.zeros((n, NUM_CLASSES), np.int64)
    batch: list[np.ndarray] = []
    done = 0

    def flush() -> None:
        nonlocal done, cm
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            logits = model((x - mean) / std)
        pred = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).argmax(1)
        gt = torch.from_numpy(np.array(labels[done : done + len(batch)]))
        cm += confusion(pred, gt)
        for k in range(len(batch)):
            pred_area[done + k] = torch.bincount(pred[k].reshape(-1), minlength=NUM_CLASSES).numpy()
            gt_area[done + k] = torch.bincount(gt[k].reshape(-1).long(), minlength=NUM_CLASSES).numpy()
        done += len(batch)
        batch.clear()

    for frame in decode_frames(DEMO / timeline["video"], w, h):
        batch.append(frame)
        if len(batch) == 8:
            flush()
    if batch:
        flush()
    assert done == n, f"decoded {done} frames, the timeline says {n}"

    threshold = frac * w * h
    pv, gv = pred_area > threshold, gt_area > threshold
    presence = {}
    for cid, name in enumerate(NAMES):
        if CATEGORY[name] == "background":
            continue
        agree = float((pv[:, cid] == gv[:, cid]).mean())
        presence[name] = {
            "frame_agreement": round(agree, 4),
            "gt_frames": int(gv[:, cid].sum()),
            "predicted_frames": int(pv[:, cid].sum()),
            "false_positive_frames": int((pv[:, cid] & ~gv[:, cid]).sum()),
            "false_negative_frames": int((~pv[:, cid] & gv[:, cid]).sum()),
        }
    clip = {
        "frames": n,
        "how": "decoded MP4, stretched to 320x192 (bilinear, antialiased), logits resized to 640x360",
        **summarise(cm),
        "presence": presence,
        "seconds": round(time.time() - t0),
    }
    path = DEMO / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics["clip"] = clip
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in clip.items() if k != "presence"}, indent=1))
    for name, p in presence.items():
        print(f"  {name:15s} presence agreement {p['frame_agreement']:.3f} "
              f"(fp {p['false_positive_frames']}, fn {p['false_negative_frames']} of {p['gt_frames']} frames)")


if __name__ == "__main__":
    main()
