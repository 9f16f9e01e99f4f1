//! The embedded demo end to end: real GStreamer sources, the in-process bus, the contract's
//! decoder; every frame accounted for.

use orstream::demo::{DemoOptions, run};

#[test]
fn every_frame_is_accounted_for() {
    let options = DemoOptions {
        streams: 3,
        frames: 40,
        width: 320,
        height: 180,
        live: false,
        progress_every: None,
    };
    let report = run(&options).unwrap();
    assert_eq!(report.streams.len(), 3, "{report:?}");
    for (stream_id, tally) in &report.streams {
        // Archive pacing: the consumer keeps up through a bounded queue, so nothing may drop.
        assert_eq!(tally.captured, 40, "{stream_id}: {tally:?}");
        assert_eq!(tally.published, 40, "{stream_id}: {tally:?}");
        assert_eq!(tally.consumed, 40, "{stream_id}: {tally:?}");
        assert_eq!(tally.rejected, 0, "{stream_id}: {tally:?}");
        assert!(tally.jpeg_bytes > 40 * 100, "{stream_id}: {tally:?}");
    }
    assert!(report.all_accounted());
}

#[test]
fn an_empty_run_is_refused() {
    let options = DemoOptions {
        frames: 0,
        ..DemoOptions::default()
    };
    let error = run(&options).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("at least one stream and one frame")
    );
}
