//! End to end, embedded: the committed demo clip through ingest -> infer (the demo model) ->
//! sink over the in-process bus into SQLite, in archive mode (every frame runs).
//!
//! Checks the accounting invariant (frames in == results == OK + skipped + errors == rows
//! stored) and that the derived events match the clip's ground truth within a stated
//! tolerance: at least 13 of the clip's 15 truth intervals are found with both ends within
//! 500 ms (6 frames at 12 fps), at most one is missed, and at most 4 derived events match no
//! truth interval. Archive mode is deterministic, so a run that falls outside these bounds
//! means the model, the clip or the derivation changed. The demo
//! model is small and trained on synthetic scenes only; where it errs (a class seen in small
//! patches where it is not) is printed with the comparison table when the test fails.

use orstream::demo::{DemoOptions, run};
use tokio_util::sync::CancellationToken;

const MAX_ERROR_MS: f64 = 500.0;
const MIN_FOUND: usize = 13;
const MAX_MISSED: usize = 1;
const MAX_SPURIOUS: usize = 4;

#[test]
fn the_demo_clip_is_recorded_completely_and_matches_its_ground_truth() {
    let out = tempfile::tempdir().unwrap();
    let options = DemoOptions::archive_quiet(out.path().to_path_buf());
    let report = run(&options, &CancellationToken::new()).unwrap();

    // 864 frames: 72 s at 12 fps.
    assert_eq!(report.published, 864, "{report:?}");
    assert_eq!(report.ingest_dropped, 0);
    assert_eq!(report.results.total(), report.published);
    assert_eq!(report.infer.results(), report.published);
    assert_eq!(report.sink.results, report.published);
    // Archive mode runs every frame.
    assert_eq!(report.results.ok, report.published);
    assert!(report.all_accounted());
    assert!(report.picture.is_file());

    let comparison = report.comparison.as_ref().unwrap();
    let table = orstream::demo::truth::render(comparison);
    let found = comparison
        .matched
        .iter()
        .filter(|m| {
            m.start_error_ms().abs() <= MAX_ERROR_MS && m.end_error_ms().abs() <= MAX_ERROR_MS
        })
        .count();
    println!("{table}");
    assert!(
        found >= MIN_FOUND,
        "only {found} truth intervals found within {MAX_ERROR_MS} ms:\n{table}"
    );
    assert!(comparison.missed.len() <= MAX_MISSED, "{table}");
    assert!(comparison.spurious.len() <= MAX_SPURIOUS, "{table}");
}
