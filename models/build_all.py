#!/usr/bin/env python3
"""Rebuilds everything under models/ that is made by a script, seeded, in one command:

    .venv/bin/python models/build_all.py

1. models/fixtures/make_maskrcnn_fixture.py  -> fixtures/tiny_maskrcnn.pt + .toml      (seconds)
2. models/synth/make_clip.py                 -> demo/clip.mp4 + clip.timeline.json     (minutes)
   models/synth/clip_tracks.py               -> demo/clip.tracks.json                  (seconds)
3. models/train.py                           -> demo/seg.pt + seg.toml + metrics.json  (~30 min)
4. models/eval_clip.py                       -> the "clip" section of demo/metrics.json
5. the measured numbers into models/README.md (between its metrics markers)
6. the privacy gate (after the above, or alone with --gate):
   models/synth/make_privacy_clip.py         -> demo/privacy.mp4 + privacy.timeline.json
                                                + privacy.tracks.json                  (minutes)
   models/train_gate.py                      -> demo/gate.pt + gate.toml + gate_metrics.json
                                                (~15 min: rendering ~9, training ~5)
   and its numbers into models/README.md (between its gate-metrics markers)
7. the evaluation sets (only with --eval-sets, which runs nothing else):
   models/synth/eval_set.py --set heldout    -> eval/heldout/*.mp4 + .timeline.json + .tracks.json
                                                + set.json                             (minutes)
   models/synth/eval_set.py --set validation -> eval/validation/...

--all-fixtures also runs models/fixtures/make_fixtures.py (tiny_semantic.pt, owned separately).
--gate runs only step 6; --skip-gate leaves it out.
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


def write_section(marker: str, new: str) -> None:
    """Replaces what stands between `<!-- MARKER:begin -->` and `<!-- MARKER:end -->` in
    models/README.md with `new`, and prints it."""
    readme = HERE / "README.md"
    text = readme.read_text()
    text, n = re.subn(rf"(<!-- {marker}:begin -->\n).*?(\n<!-- {marker}:end -->)",
                      lambda mm: mm.group(1) + new + mm.group(2), text, flags=re.S)
    if n != 1:
        raise SystemExit(f"models/README.md has no {marker} markers")
    readme.write_text(text)
    print(new)


def write_readme(m: dict) -> None:
    write_section("metrics", readme_section(m))


def gate_readme_section(g: dict) -> str:
    held, tr, thr = g["heldout"], g["training"], g["threshold"]

    def pct(v) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def row(name: str, r: dict | None) -> str:
        if r is None:
            return f"| {name} | not measured | | | | |"
        auc = "n/a" if r.get("roc_auc") is None else f"{r['roc_auc']:.4f}"
        rec = "n/a" if r.get("out_of_body_recall") is None else (
            f"{pct(r['out_of_body_recall'])} ({r['out_of_body_frames'] - r['missed_out_of_body_frames']} / "
            f"{r['out_of_body_frames']})")
        fr = f"{pct(r['in_body_false_redaction_rate'])} ({r['in_body_false_redactions']} / {r['in_body_frames']})"
        return f"| {name} | {r['frames']} | {auc} | {pct(r['accuracy'])} | {rec} | {fr} |"

    d, mdl, cpu = g["data"], g["model"], g["cpu_ms_per_frame"]
    errors = [f"{k} {v['redacted']}/{v['frames']} redacted" for k, v in held["per_kind"].items()
              if v["label"] == "in_body" and v["redacted"]]
    errors += [f"{k} {v['frames'] - v['redacted']}/{v['frames']} missed" for k, v in held["per_kind"].items()
               if v["label"] == "out_of_body" and v["redacted"] < v["frames"]]
    lines = [
        "Measured by `models/train_gate.py` (numbers from `models/demo/gate_metrics.json`), at the card's "
        f"threshold **{thr['value']}** ({thr['safety_factor']} x {thr['highest_threshold_at_recall_heldout']:.4f}, "
        f"the highest threshold at which at least {thr['recall']:.1%} of the held-out out-of-body frames are "
        "still redacted; the margins cover the rest within a withdrawal).",
        "",
        "| frames | count | ROC AUC | accuracy | out-of-body recall | in-body false redactions |",
        "|---|---|---|---|---|---|",
        row(f"held-out ({d['heldout']['units']} unseen worlds + rooms)", held),
        row("privacy clip (`privacy.mp4`)", g.get("privacy_clip")),
        row("demo clip (`clip.mp4`, all in body)", g.get("demo_clip")),
        "",
        "Held-out errors by kind of frame (in-body kinds: frames redacted; out-of-body kinds: frames missed): "
        + (", ".join(errors) + "; every other kind: none." if errors else "none."),
        "Other downscaling paths on the held-out set, same threshold: "
        + "; ".join(f"{k}: AUC {v['roc_auc']:.4f}, recall {pct(v['out_of_body_recall'])}, false redactions "
                    f"{pct(v['in_body_false_redaction_rate'])}" for k, v in held["other_downscaling"].items()) + ".",
        f"Model: `gate.pt`, {mdl['bytes'] / 1e3:.0f} KB, {mdl['parameters']:,} parameters, input [B, 3, 64, 64]. "
        f"CPU time per frame, 1 thread, TorchScript fp32: **{cpu['batch_1']} ms at batch 1**, {cpu['batch_8']} ms at "
        f"batch 8 ({cpu['cpu']}; best of 5 rounds on a shared machine).",
        f"Data: {d['train']['frames']} training frames ({d['train']['in_body']} in body, {d['train']['out_of_body']} out of "
        f"body, {d['train']['passage_frames']} of them passages through the trocar) from {d['train']['units']} units, "
        f"{d['heldout']['frames']} held-out frames ({d['heldout']['in_body']} in body, {d['heldout']['out_of_body']} out "
        f"of body) from {d['heldout']['units']} other units. Rendering {tr['render_train_seconds']} s + "
        f"{tr['render_heldout_seconds']} s, training {tr['train_seconds']} s ({tr['steps']} steps x {tr['batch']}, "
        f"1 thread), evaluation {tr['eval_seconds']} s.",
    ]
    if g.get("privacy_clip"):
        pc = g["privacy_clip"]
        lines.append("Privacy clip, out-of-body stretches redacted: " + ", ".join(
            f"{s['start_s']:.2f}-{s['end_s']:.2f} s {s['redacted_frames']}/{s['frames']}" for s in pc["stretches"]) + ".")
        v = pc.get("as_1280x720")
        if v:
            lines.append(f"The privacy clip as 1280x720 video (its 1/8-scale decode 160x90, a size the gate was not "
                         f"trained on): AUC {v['roc_auc']:.4f}, out-of-body recall {pct(v['out_of_body_recall'])}, "
                         f"in-body false redactions {pct(v['in_body_false_redaction_rate'])}.")
    if g.get("build"):
        b = g["build"]
        lines.append(f"Gate build (`build_all.py --gate`): {b['total_seconds'] / 60:.1f} min wall "
                     f"({', '.join(f'{k} {v} s' for k, v in b['steps'].items())}).")
    if g.get("gstreamer"):
        lines.append(f"GStreamer reads the privacy clip: `{g['gstreamer']}`.")
    return "\n".join(lines)


def write_gate_readme(g: dict) -> None:
    write_section("gate-metrics", gate_readme_section(g))


def gate_steps() -> None:
    """The privacy clip and the gate: render, train, measure, and the numbers into the README."""
    t0 = time.time()
    times: dict[str, int] = {}
    run("privacy clip", ["models/synth/make_privacy_clip.py"], times)
    run("gate", ["models/train_gate.py"], times)
    path = HERE / "demo" / "gate_metrics.json"
    g = json.loads(path.read_text())
    clip = HERE / "demo" / "privacy.mp4"
    tl = json.loads((HERE / "demo" / "privacy.timeline.json").read_text())
    g["privacy_clip_file"] = {"bytes": clip.stat().st_size, "frames": tl["frame_count"], "fps": tl["fps"],
                              "duration_s": tl["duration_s"], "width": tl["width"], "height": tl["height"],
                              "out_of_body_frames": tl["out_of_body_frames"]}
    g["gstreamer"] = gst_check(clip)
    g["build"] = {"total_seconds": round(time.time() - t0), "steps": times, "command": "python models/build_all.py --gate"}
    path.write_text(json.dumps(g, indent=2) + "\n")
    write_gate_readme(g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all-fixtures", action="store_true", help="also run fixtures/make_fixtures.py")
    ap.add_argument("--skip-clip", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--gate", action="store_true", help="only the privacy clip and the privacy gate (step 6)")
    ap.add_argument("--skip-gate", action="store_true", help="leave out the privacy clip and the privacy gate")
    ap.add_argument("--eval-sets", action="store_true",
                    help="only the evaluation sets: models/synth/eval_set.py for heldout and validation (step 7)")
    ap.add_argument("--readme-only", action="store_true",
                    help="only rewrite README.md's numbers from metrics.json (and gate_metrics.json)")
    ap.add_argument("train_args", nargs="*", help="after --: passed to train.py")
    args = ap.parse_args()
    if args.readme_only:
        write_readme(json.loads((HERE / "demo" / "metrics.json").read_text()))
        if (HERE / "demo" / "gate_metrics.json").exists():
            write_gate_readme(json.loads((HERE / "demo" / "gate_metrics.json").read_text()))
        return
    if args.eval_sets:
        t0 = time.time()
        times: dict[str, int] = {}
        for name in ("heldout", "validation"):
            run(f"eval set {name}", ["models/synth/eval_set.py", "--set", name], times)
        print(f"== evaluation sets done in {(time.time() - t0) / 60:.1f} min", flush=True)
        return
    if args.gate:
        gate_steps()
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
    if not args.skip_gate:
        gate_steps()
    print(f"== all done in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
