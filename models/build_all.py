#!/usr/bin/env python3
"""Rebuilds everything under models/ that is made by a script, seeded, in one command:

    .venv/bin/python models/build_all.py

1. models/fixtures/make_maskrcnn_fixture.py  -> fixtures/tiny_maskrcnn.pt + .toml      (seconds)
2. models/synth/make_clip.py                 -> demo/clip.mp4 + clip.timeline.json     (minutes)
   models/synth/clip_tracks.py               -> demo/clip.tracks.json                  (seconds)
3. models/train.py                           -> demo/seg.pt + seg.toml + metrics.json  (~30 min)
4. models/eval_clip.py                       -> the "clip" section of demo/metrics.json
5. the measured numbers into models/README.md (between its metrics markers)

--all-fixtures also runs models/fixtures/make_fixtures.py (tiny_semantic.pt, owned separately).
Extra arguments after -- go to train.py (e.g. -- --steps 300 for a quick run).
Everything runs on CPU; rendered data sets are cached in models/.cache (delete it to start
clean). Needs the project venv (torch 2.11.0, torchvision 0.26.0, numpy, imageio-ffmpeg).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def run(step: str, args: list[str], times: dict) -> None:
    print(f"== {step}: {' '.join(args)}", flush=True)
    t = time.time()
    subprocess.run([PY, *args], check=True, cwd=HERE.parent)
    times[step] = round(time.time() - t)
    print(f"== {step} done in {times[step]} s", flush=True)


def gst_check(clip: Path) -> str:
    """Plays the clip through GStreamer's decodebin to a fakesink; '' when gst-launch-1.0 is not
    installed, an error when it cannot play it or the stream is not H.264."""
    try:
        out = subprocess.run(
            ["gst-launch-1.0", "-v", "filesrc", f"location={clip}", "!", "decodebin", "!", "videoconvert",
             "!", "fakesink", "sync=false"],
            capture_output=True, text=True, timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = out.stdout + out.stderr
    if out.returncode != 0 or "video/x-h264" not in text or "EOS" not in text:
        raise SystemExit(f"GStreamer cannot play {clip}:\n{text[-3000:]}")
    caps = re.search(r"video/x-h264.*?profile=\(string\)(\w+).*?width=\(int\)(\d+), height=\(int\)(\d+), "
                     r"framerate=\(fraction\)([\d/]+)", text)
    what = f"H.264 {caps.group(1)} {caps.group(2)}x{caps.group(3)} at {caps.group(4)} fps" if caps else "H.264"
    return f"gst-launch-1.0 filesrc ! decodebin ! videoconvert ! fakesink: {what}, played to EOS"


def fmt(v: float) -> str:
    return f"{v:.3f}"


def readme_section(m: dict) -> str:
    held, clip, cpu, model, tr = m["heldout"], m.get("clip"), m["cpu_ms_per_frame"], m["model"], m["training"]
    names = list(held["per_class_iou"])
    lines = [
        f"Measured by `models/build_all.py` (numbers from `models/demo/metrics.json`).",
        "",
        f"Held-out synthetic set: {held['frames']} frames from {held['scenes']} scenes (worlds) never seen in "
        f"training; IoU summed over all frames at 320x192.",
    ]
    if clip:
        lines.append(f"Demo clip: all {clip['frames']} frames decoded from `clip.mp4`, IoU at 640x360.")
    lines += ["", "| class | category | IoU held-out |" + (" IoU clip |" if clip else ""),
              "|---|---|---|" + ("---|" if clip else "")]
    sys.path.insert(0, str(HERE / "synth"))
    from scene import CATEGORY  # noqa: E402

    for n in names:
        row = f"| {n} | {CATEGORY[n]} | {fmt(held['per_class_iou'][n])} |"
        if clip:
            row += f" {fmt(clip['per_class_iou'][n])} |"
        lines.append(row)
    for key, label in (("miou", "**mIoU**"), ("tool_miou", "tools mIoU"), ("organ_miou", "organs mIoU"),
                       ("min_tool_iou", "lowest tool IoU"), ("pixel_accuracy", "pixel accuracy")):
        row = f"| {label} | | {fmt(held[key])} |"
        if clip:
            row += f" {fmt(clip[key])} |"
        lines.append(row)
    lines += [
        "",
        f"Model: `seg.pt`, {model['bytes'] / 1e6:.2f} MB, {model['parameters']:,} parameters, input "
        f"[B, 3, 192, 320].",
        f"CPU time per frame, 1 thread, TorchScript fp32: **{cpu['batch_1']} ms at batch 1**, "
        f"**{cpu['batch_8']} ms at batch 8** ({cpu['cpu']}; best of 3 rounds on a shared machine).",
        f"Training: {tr['frames']} frames from {tr['scenes']} scenes, {tr['steps']} steps x {tr['batch']}, "
        f"{tr['threads']} thread{'s' if tr['threads'] != 1 else ''}, bf16 autocast {'on' if tr['bf16_autocast'] else 'off'}; "
        f"rendering {tr['data_seconds']} s, training {tr['train_seconds']} s.",
    ]
    if clip:
        bad = {k: v for k, v in clip["presence"].items() if v["frame_agreement"] < 1.0}
        agree = min(v["frame_agreement"] for v in clip["presence"].values())
        lines.append(
            f"Presence on the clip (area above the timeline threshold, per frame) agrees with the ground "
            f"truth in at least {agree * 100:.1f} % of frames for every class"
            + (": " + ", ".join(f"{k} {v['frame_agreement'] * 100:.1f} %" for k, v in bad.items()) if bad else "")
            + "."
        )
    if "build" in m:
        b = m["build"]
        lines.append(f"Whole build (`build_all.py`): {b['total_seconds'] / 60:.1f} min wall "
                     f"({', '.join(f'{k} {v} s' for k, v in b['steps'].items())}).")
    if m.get("gstreamer"):
        lines.append(f"GStreamer reads the clip: `{m['gstreamer']}`.")
    return "\n".join(lines)


def write_readme(m: dict) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    new = readme_section(m)
    text, n = re.subn(r"(<!-- metrics:begin -->\n).*?(\n<!-- metrics:end -->)",
                      lambda mm: mm.group(1) + new + mm.group(2), text, flags=re.S)
    if n != 1:
        raise SystemExit("models/README.md has no metrics markers")
    readme.write_text(text)
    print(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all-fixtures", action="store_true", help="also run fixtures/make_fixtures.py")
    ap.add_argument("--skip-clip", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--readme-only", action="store_true", help="only rewrite README.md's numbers from metrics.json")
    ap.add_argument("train_args", nargs="*", help="after --: passed to train.py")
    args = ap.parse_args()
    if args.readme_only:
        write_readme(json.loads((HERE / "demo" / "metrics.json").read_text()))
        return
    t0 = time.time()
    times: dict[str, int] = {}
    if args.all_fixtures:
        run("tiny_semantic fixture", ["models/fixtures/make_fixtures.py"], times)
    run("maskrcnn fixture", ["models/fixtures/make_maskrcnn_fixture.py"], times)
    if not args.skip_clip:
        run("clip", ["models/synth/make_clip.py"], times)
        run("clip tracks", ["models/synth/clip_tracks.py"], times)
    if not args.skip_train:
        run("train", ["models/train.py", *args.train_args], times)
    run("eval clip", ["models/eval_clip.py"], times)

    metrics_path = HERE / "demo" / "metrics.json"
    m = json.loads(metrics_path.read_text())
    m["gstreamer"] = gst_check(HERE / "demo" / "clip.mp4")
    clip = HERE / "demo" / "clip.mp4"
    tl = json.loads((HERE / "demo" / "clip.timeline.json").read_text())
    m["clip_file"] = {"bytes": clip.stat().st_size, "frames": tl["frame_count"], "fps": tl["fps"],
                      "duration_s": tl["duration_s"], "width": tl["width"], "height": tl["height"]}
    m["build"] = {"total_seconds": round(time.time() - t0), "steps": times,
                  "command": "python models/build_all.py" + (" --all-fixtures" if args.all_fixtures else "")}
    metrics_path.write_text(json.dumps(m, indent=2) + "\n")

    write_readme(m)
    print(f"== all done in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
