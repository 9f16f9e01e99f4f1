//! `orstream eval` as a user runs it: a directory holding the demo clip with its truth files
//! (under another name) is played through the embedded pipeline and scored. The JSON it writes
//! must agree with the truth files (every truth interval matched or missed, every scripted
//! tool a row) and with itself (errors in frames are the errors in ms at the clip's rate, the
//! overall counts the clip's), and `--strict` fails exactly when a target is missed. Bad
//! directories and unknown clip names are refused with the name of what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn eval(args: &[&str]) -> Output {
    Command::new(ORSTREAM)
        .current_dir(ROOT)
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_set_of_one_clip_is_scored_against_its_truth_files() {
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    std::fs::create_dir(&clips).unwrap();
    let demo = Path::new(ROOT).join("models/demo");
    for ext in ["mp4", "timeline.json", "tracks.json"] {
        std::os::unix::fs::symlink(
            demo.join(format!("clip.{ext}")),
            clips.join(format!("or-a.{ext}")),
        )
        .unwrap();
    }
    let json = dir.path().join("eval.json");
    let output = eval(&[
        "--clips",
        clips.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--strict",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    let set = read_json(&json);
    let clip = &set["clips"][0];
    assert_eq!(set["clips"].as_array().unwrap().len(), 1);
    assert_eq!(clip["name"], "or-a");
    assert_eq!(
        output.status.success(),
        set["meets_targets"] == true,
        "--strict fails exactly when a target is missed: {stderr}"
    );
    assert_eq!(
        set["meets_targets"],
        set["failures"].as_array().unwrap().is_empty()
    );
    if !output.status.success() {
        assert!(stderr.contains("misses its targets"), "{stderr}");
    }

    let truth = read_json(&demo.join("clip.timeline.json"));
    let tracks = read_json(&demo.join("clip.tracks.json"));
    let s = &clip["summary"];
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(n(&s["frames"]), n(&truth["frame_count"]));
    assert_eq!(
        n(&s["truth_events"]),
        truth["intervals"].as_array().unwrap().len() as u64
    );
    assert_eq!(n(&s["matched"]) + n(&s["missed"]), n(&s["truth_events"]));
    assert_eq!(
        n(&s["missed"]),
        clip["missed"].as_array().unwrap().len() as u64
    );
    assert_eq!(
        n(&s["spurious"]),
        clip["spurious"].as_array().unwrap().len() as u64
    );
    assert_eq!(n(&s["boundaries"]), 2 * n(&s["matched"]));
    // The demo model finds most of the clip (tests/e2e_embedded.rs holds it to 13 of 15).
    assert!(n(&s["matched"]) >= 13, "{s}");
    let fps = truth["fps"].as_f64().unwrap();
    let mut within = 0;
    for e in clip["events"].as_array().unwrap() {
        for end in ["start", "end"] {
            let ms = e[format!("{end}_error_ms")].as_f64().unwrap();
            let frames = e[format!("{end}_error_frames")].as_i64().unwrap();
            assert_eq!(frames, (ms / 1e3 * fps).round() as i64, "{e}");
            assert!(
                (ms / 1e3 * fps - frames as f64).abs() < 1e-3,
                "boundaries are frame times: {e}"
            );
            within += u64::from(frames.abs() <= 1);
        }
    }
    assert_eq!(n(&s["within_one_frame"]), within);
    assert_eq!(
        clip["tracks"].as_array().unwrap().len(),
        tracks["tracks"].as_array().unwrap().len()
    );
    for t in clip["tracks"].as_array().unwrap() {
        assert!(n(&t["frames_followed"]) <= n(&t["truth_frames"]), "{t}");
    }
    assert_eq!(set["overall"]["clips"], 1);
    for key in [
        "matched",
        "missed",
        "spurious",
        "boundaries",
        "switches",
        "spurious_tracks",
    ] {
        assert_eq!(set["overall"][key], s[key], "{key}");
    }
    assert!(stdout.contains("overall"), "{stdout}");
    assert!(stdout.contains("or-a"), "{stdout}");

    // An unknown clip name is refused before anything runs.
    let output = eval(&["--clips", clips.to_str().unwrap(), "--only", "or-b"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no clip \"or-b\""), "{stderr}");
}

#[test]
fn a_video_without_truth_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("room.mp4"), b"").unwrap();
    let output = eval(&["--clips", dir.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("room.mp4") && stderr.contains("no ground truth"),
        "{stderr}"
    );
    let output = eval(&["--clips", dir.path().join("absent").to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absent"), "{stderr}");
}
