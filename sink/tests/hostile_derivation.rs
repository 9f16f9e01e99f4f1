//! No value can stall or corrupt the derivation: results that reach it straight (without the
//! contract's checks that the sink's decoder applies first) with every hostile value: NaN,
//! infinities, huge and tiny numbers, seqs and times at the ends of their types, empty and huge
//! instance lists. Each run ends (every loop in the derivation and the tracker is bounded), and
//! the state survives its stored form (JSON, as the sink keeps it) at every step, and whatever is
//! derived holds finite numbers only, so the record can store and read it back.

use std::collections::BTreeSet;

use orstream_proto::{
    BBox, Category, ClockSource, FrameResult, FrameStatus, Instance, ModelIdentity, Point,
};
use orstream_sink::derive::{Rules, StreamState};
use orstream_sink::track::TrackRules;
use proptest::prelude::*;

fn rules() -> Rules {
    Rules {
        enter_frames: 2,
        window_frames: 3,
        absent_after_ns: 200_000_000,
        min_score: 0.5,
        categories: BTreeSet::from([Category::Tool as i32, Category::Organ as i32]),
        tracking: TrackRules::default(),
    }
}

/// Any f32, hostile ones often.
fn number() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => 0f32..=1.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN),
        1 => Just(f32::MIN_POSITIVE),
        1 => Just(-0.0f32),
        1 => any::<f32>(),
    ]
}

fn point() -> impl Strategy<Value = Option<Point>> {
    proptest::option::weighted(0.9, (number(), number()).prop_map(|(x, y)| Point { x, y }))
}

fn bbox() -> impl Strategy<Value = Option<BBox>> {
    proptest::option::weighted(
        0.9,
        (number(), number(), number(), number()).prop_map(|(x0, y0, x1, y1)| BBox {
            x0,
            y0,
            x1,
            y1,
        }),
    )
}

fn instance() -> impl Strategy<Value = Instance> {
    (0u32..4, number(), number(), bbox(), point()).prop_map(
        |(class_id, score, area, bbox, centroid)| Instance {
            class_id,
            label: format!("class-{class_id}"),
            category: Category::Tool as i32,
            score,
            bbox,
            area,
            centroid,
            mask: None,
        },
    )
}

fn seq_step() -> impl Strategy<Value = u64> {
    prop_oneof![8 => Just(1u64), 1 => Just(0u64), 1 => 2u64..10, 1 => Just(u64::MAX / 2), 1 => Just(u64::MAX)]
}

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 0i64..100_000_000,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ]
}

/// One result of the hostile stream: how far its seq and capture time move, its epoch, status
/// and instances (up to a few hundred, so one message is large).
fn step() -> impl Strategy<Value = (u64, i64, u64, bool, Vec<Instance>)> {
    (
        seq_step(),
        time(),
        prop_oneof![9 => Just(0u64), 1 => any::<u64>()],
        prop::bool::weighted(0.9),
        prop_oneof![
            6 => proptest::collection::vec(instance(), 0..6),
            1 => proptest::collection::vec(instance(), 200..400),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_values_never_stall_or_corrupt_the_derivation(steps in proptest::collection::vec(step(), 1..40)) {
        let rules = rules();
        let mut state = StreamState::new("cam-1");
        let (mut seq, mut ns) = (0u64, 1_795_000_000_000_000_000i64);
        for (i, (seq_step, dt, epoch, ok, instances)) in steps.into_iter().enumerate() {
            seq = seq.wrapping_add(seq_step);
            ns = ns.wrapping_add(dt);
            let result = FrameResult {
                stream_id: "cam-1".into(),
                case_id: "case-1".into(),
                session_epoch: epoch,
                seq,
                capture_time_ns: ns,
                clock_source: ClockSource::Host as i32,
                status: if ok { FrameStatus::Ok } else { FrameStatus::ModelError } as i32,
                model: Some(ModelIdentity { name: "m".into(), version: "1".into(), digest: "sha256:00".into() }),
                instances,
                ..FrameResult::default()
            };
            let out = state.apply_result(&result, &rules);
            let derived = format!("{out:?}");
            prop_assert!(!derived.contains("NaN") && !derived.contains("inf"),
                "step {i} derived a non-finite number: {derived}");
            let json = serde_json::to_string(&state).expect("the state serializes");
            state = serde_json::from_str(&json)
                .map_err(|e| TestCaseError::fail(format!("step {i}: the stored state does not read back: {e}")))?;
        }
        let open = format!("{:?}{:?}", state.open_presences(), state.open_tracks());
        prop_assert!(!open.contains("NaN") && !open.contains("inf"), "{open}");
    }
}
