//! Round-trip and rejection tests of the v1 contract.

use orstream_proto::v1::{
    BBox, CaseEnded, CaseStarted, Category, ClockSource, Encoding, EventKind, Frame, FrameResult,
    FrameStatus, Instance, ModelIdentity, Point, Redaction, RedactionReason, StreamDiscontinuity,
    StreamEvent, SurgicalEvent, Timings, TrackFrame, TrackedInstance, stream_event,
};
use orstream_proto::{DecodeError, decode, decode_with_limit, encode, rle};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,40}"
}

prop_compose! {
    fn frame()(stream_id in id(), case_id in id(), session_epoch in any::<u64>(), seq in any::<u64>(),
               capture_time_ns in any::<i64>(), pts_ns in any::<i64>(),
               width in 1u32..=4096, height in 1u32..=4096,
               data in proptest::collection::vec(any::<u8>(), 1..512)) -> Frame {
        Frame {
            stream_id, case_id, session_epoch, seq, capture_time_ns,
            clock_source: ClockSource::CameraNtp as i32, pts_ns, width, height,
            encoding: Encoding::Jpeg as i32, data: data.into(), redaction: None,
        }
    }
}

prop_compose! {
    fn instance()(class_id in 0u32..32, label in id(), score in 0f32..1.0, x0 in 0f32..0.5,
                  y0 in 0f32..0.5, w in 1u32..16, h in 1u32..16, seed in any::<u64>()) -> Instance {
        let cells: Vec<u8> = (0..(w * h) as usize).map(|i| ((seed >> (i % 64)) & 1) as u8).collect();
        Instance {
            class_id, label, category: Category::Tool as i32, score,
            bbox: Some(BBox { x0, y0, x1: x0 + 0.25, y1: y0 + 0.25 }),
            area: 0.01, centroid: Some(Point { x: x0, y: y0 }),
            mask: rle::encode(w, h, &cells),
        }
    }
}

prop_compose! {
    fn frame_result()(f in frame(), instances in proptest::collection::vec(instance(), 0..6),
                      status in 1i32..=6, batch_size in 1u32..64) -> FrameResult {
        FrameResult {
            stream_id: f.stream_id, case_id: f.case_id, session_epoch: f.session_epoch, seq: f.seq,
            capture_time_ns: f.capture_time_ns, clock_source: f.clock_source, status,
            status_detail: String::new(),
            model: Some(ModelIdentity { name: "m".into(), version: "1".into(), digest: "sha256:00".into() }),
            instances,
            timings: Some(Timings { queue_wait_us: 1, batch_size, preprocess_us: 2, forward_us: 3, postprocess_us: 4 }),
            result_time_ns: 5, width: f.width, height: f.height,
        }
    }
}

proptest! {
    #[test]
    fn frame_round_trips(f in frame()) {
        prop_assert_eq!(decode::<Frame>(&encode(&f)).unwrap(), f);
    }

    #[test]
    fn frame_result_round_trips(r in frame_result()) {
        prop_assert_eq!(decode::<FrameResult>(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn stream_event_round_trips(stream_id in id(), epoch in any::<u64>(), last in proptest::option::of(any::<u64>()),
                                start in any::<i64>(), end in any::<i64>()) {
        let e = StreamEvent {
            stream_id, case_id: "case-1".into(), session_epoch: epoch, time_ns: end,
            room_id: "OR3".into(),
            kind: Some(stream_event::Kind::Discontinuity(StreamDiscontinuity {
                previous_epoch: epoch.wrapping_sub(1), previous_last_seq: last,
                gap_start_ns: start, gap_end_ns: end, reason: "stall".into(),
            })),
        };
        prop_assert_eq!(decode::<StreamEvent>(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn surgical_event_round_trips(event_id in id(), start in 0i64..1 << 60, len in 0i64..1 << 40,
                                  first in any::<u32>(), n in any::<u16>()) {
        let e = SurgicalEvent {
            event_id, case_id: "case-1".into(), stream_id: "or1".into(),
            kind: EventKind::Presence as i32, class_id: 3, label: "grasper".into(),
            category: Category::Tool as i32, start_time_ns: start, end_time_ns: start + len,
            start_offset_ns: 0, end_offset_ns: len, peak_confidence: 0.9, mean_confidence: 0.8,
            session_epoch: 1, first_seq: u64::from(first), last_seq: u64::from(first) + u64::from(n),
            model: None, gap_reason: String::new(), track_ids: vec![u64::from(n)], track: None,
        };
        prop_assert_eq!(decode::<SurgicalEvent>(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn track_frame_round_trips(seq in any::<u64>(), id in 1u64.., x in 0f32..1.0) {
        let f = TrackFrame {
            stream_id: "or1".into(), case_id: "case-1".into(), session_epoch: 2, seq,
            capture_time_ns: 7,
            tracks: vec![TrackedInstance {
                track_id: id, class_id: 5, label: "grasper".into(), instance_index: 1,
                centroid: Some(Point { x, y: 0.5 }), bbox: None, velocity: None, score: 0.9,
            }],
        };
        prop_assert_eq!(decode::<TrackFrame>(&encode(&f)).unwrap(), f);
    }

    /// Arbitrary bytes never panic: they decode to a valid message or give an error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode::<Frame>(&bytes);
        let _ = decode::<FrameResult>(&bytes);
        let _ = decode::<StreamEvent>(&bytes);
        let _ = decode::<SurgicalEvent>(&bytes);
        let _ = decode::<TrackFrame>(&bytes);
    }
}

fn valid_frame() -> Frame {
    Frame {
        stream_id: "or-1".into(),
        case_id: "case-1".into(),
        session_epoch: 1,
        seq: 0,
        capture_time_ns: 1,
        clock_source: ClockSource::Host as i32,
        pts_ns: 0,
        width: 640,
        height: 360,
        encoding: Encoding::Jpeg as i32,
        data: vec![0xff, 0xd8, 0xff, 0xd9].into(),
        redaction: None,
    }
}

#[test]
fn empty_payload_is_refused() {
    let err = decode::<Frame>(&[]).unwrap_err();
    assert!(matches!(err, DecodeError::Empty { .. }), "{err}");
    assert_eq!(err.to_string(), "Frame: empty payload");
}

#[test]
fn oversized_payload_is_refused_before_decoding() {
    let bytes = encode(&valid_frame());
    let err = decode_with_limit::<Frame>(&bytes, bytes.len() - 1).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "payload of {} bytes exceeds the limit",
            bytes.len()
        )),
        "{err}"
    );
}

#[test]
fn truncated_payload_is_malformed() {
    let bytes = encode(&valid_frame());
    let err = decode::<Frame>(&bytes[..bytes.len() - 2]).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
}

#[test]
fn invalid_fields_are_named() {
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame {
                stream_id: String::new(),
                ..valid_frame()
            },
            "invalid field stream_id",
        ),
        (
            Frame {
                width: 65_535,
                ..valid_frame()
            },
            "invalid field width: 65535",
        ),
        (
            Frame {
                height: 0,
                ..valid_frame()
            },
            "invalid field height",
        ),
        (
            Frame {
                encoding: 0,
                ..valid_frame()
            },
            "invalid field encoding: must be specified",
        ),
        (
            Frame {
                encoding: 7,
                ..valid_frame()
            },
            "invalid field encoding: unknown value 7",
        ),
        (
            Frame {
                data: Default::default(),
                ..valid_frame()
            },
            "invalid field data",
        ),
        (
            Frame {
                stream_id: "a\nb".into(),
                ..valid_frame()
            },
            "control characters",
        ),
        (
            Frame {
                case_id: "x".repeat(200),
                ..valid_frame()
            },
            "invalid field case_id",
        ),
    ];
    for (frame, expected) in cases {
        let err = decode::<Frame>(&encode(&frame)).unwrap_err();
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
}

fn redacted_frame() -> Frame {
    Frame {
        encoding: Encoding::Unspecified as i32,
        data: Default::default(),
        redaction: Some(Redaction {
            reason: RedactionReason::OutOfBody as i32,
            score: 0.97,
            detail: "out of body".into(),
            model: Some(ModelIdentity {
                name: "gate".into(),
                version: "1".into(),
                digest: "sha256:00".into(),
            }),
        }),
        ..valid_frame()
    }
}

#[test]
fn a_redacted_frame_round_trips_without_an_image() {
    let frame = redacted_frame();
    assert_eq!(decode::<Frame>(&encode(&frame)).unwrap(), frame);
    let unavailable = Frame {
        redaction: Some(Redaction {
            reason: RedactionReason::GateUnavailable as i32,
            score: 0.0,
            detail: "gate model unavailable".into(),
            model: None,
        }),
        ..redacted_frame()
    };
    assert_eq!(decode::<Frame>(&encode(&unavailable)).unwrap(), unavailable);
}

#[test]
fn a_redacted_frame_may_carry_no_image_and_must_say_why() {
    let with_image = Frame {
        data: vec![0xff, 0xd8, 0xff, 0xd9].into(),
        ..redacted_frame()
    };
    let cases: Vec<(Frame, &str)> = vec![
        (
            with_image,
            "invalid field data: 4 image bytes on a redacted frame",
        ),
        (
            Frame {
                encoding: Encoding::Jpeg as i32,
                ..redacted_frame()
            },
            "invalid field encoding: must be UNSPECIFIED on a redacted frame",
        ),
        (
            Frame {
                redaction: Some(Redaction {
                    reason: 0,
                    ..redacted_frame().redaction.unwrap()
                }),
                ..redacted_frame()
            },
            "invalid field redaction.reason: must be specified",
        ),
        (
            Frame {
                redaction: Some(Redaction {
                    score: f32::NAN,
                    ..redacted_frame().redaction.unwrap()
                }),
                ..redacted_frame()
            },
            "invalid field redaction.score",
        ),
        (
            Frame {
                redaction: Some(Redaction {
                    detail: "a\0b".into(),
                    ..redacted_frame().redaction.unwrap()
                }),
                ..redacted_frame()
            },
            "invalid field redaction.detail",
        ),
        (
            Frame {
                width: 0,
                ..redacted_frame()
            },
            "invalid field width",
        ),
    ];
    for (frame, expected) in cases {
        let err = decode::<Frame>(&encode(&frame)).unwrap_err();
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
}

#[test]
fn result_with_unknown_status_or_bad_mask_is_invalid() {
    let result = FrameResult {
        stream_id: "or-1".into(),
        status: FrameStatus::Ok as i32,
        ..Default::default()
    };
    assert!(decode::<FrameResult>(&encode(&result)).is_ok());
    let unknown = FrameResult {
        status: 42,
        ..result.clone()
    };
    assert!(
        decode::<FrameResult>(&encode(&unknown))
            .unwrap_err()
            .to_string()
            .contains("status")
    );
    let mut bad_mask = result;
    bad_mask.instances.push(Instance {
        mask: Some(orstream_proto::RleMask {
            width: 4,
            height: 4,
            counts: vec![3],
        }),
        ..Default::default()
    });
    let err = decode::<FrameResult>(&encode(&bad_mask)).unwrap_err();
    assert!(
        err.to_string()
            .contains("instances.mask: instance 0: runs cover 3 cells"),
        "{err}"
    );
}

fn case_event(kind: stream_event::Kind) -> StreamEvent {
    StreamEvent::for_room("OR3", "case-0042", 1_700_000_000_000_000_000, kind)
}

#[test]
fn a_rooms_case_events_round_trip_and_name_the_room_and_case() {
    let started = case_event(stream_event::Kind::CaseStarted(CaseStarted {
        cameras: vec!["or3-lap".into(), "or3-room".into()],
    }));
    let ended = case_event(stream_event::Kind::CaseEnded(CaseEnded {
        cameras: vec!["or3-lap".into(), "or3-room".into(), "or3-micro".into()],
        detail: "ended by staff".into(),
    }));
    for event in [&started, &ended] {
        assert_eq!(&decode::<StreamEvent>(&encode(event)).unwrap(), event);
    }

    let refused = |event: StreamEvent, field: &str| {
        let err = decode::<StreamEvent>(&encode(&event))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    };
    // A case event belongs to a room, not to a stream, and names its case.
    refused(
        StreamEvent {
            stream_id: "or3-lap".into(),
            ..started.clone()
        },
        "stream_id",
    );
    refused(
        StreamEvent {
            room_id: String::new(),
            ..started.clone()
        },
        "room_id",
    );
    refused(
        StreamEvent {
            case_id: String::new(),
            ..ended.clone()
        },
        "case_id",
    );
    refused(
        StreamEvent {
            room_id: "OR\u{0}3".into(),
            ..started.clone()
        },
        "room_id",
    );
    // Cameras: ids, none twice, a bounded list.
    let cameras =
        |cameras: Vec<String>| case_event(stream_event::Kind::CaseStarted(CaseStarted { cameras }));
    refused(
        cameras(vec!["lap".into(), "lap".into()]),
        "case_started.cameras",
    );
    refused(cameras(vec![String::new()]), "case_started.cameras");
    refused(
        cameras((0..65).map(|i| format!("cam-{i}")).collect()),
        "case_started.cameras",
    );
    refused(
        case_event(stream_event::Kind::CaseEnded(CaseEnded {
            cameras: vec![],
            detail: "x".repeat(5000),
        })),
        "case_ended.detail",
    );
    // A camera's event may name its room; with hostile text it is refused too.
    let camera_event = StreamEvent {
        stream_id: "or3-lap".into(),
        room_id: "OR3".into(),
        kind: Some(stream_event::Kind::Started(
            orstream_proto::v1::StreamStarted {
                source_kind: "file".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    assert_eq!(
        decode::<StreamEvent>(&encode(&camera_event)).unwrap(),
        camera_event
    );
    refused(
        StreamEvent {
            room_id: "x".repeat(200),
            ..camera_event
        },
        "room_id",
    );
}

#[test]
fn stream_event_without_kind_is_invalid() {
    let e = StreamEvent {
        stream_id: "or-1".into(),
        ..Default::default()
    };
    assert!(
        decode::<StreamEvent>(&encode(&e))
            .unwrap_err()
            .to_string()
            .contains("kind")
    );
}

#[test]
fn a_track_event_needs_its_motion_and_track_ids_start_at_one() {
    let e = SurgicalEvent {
        event_id: "e1".into(),
        stream_id: "or-1".into(),
        kind: EventKind::Track as i32,
        ..Default::default()
    };
    let err = decode::<SurgicalEvent>(&encode(&e))
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid field track"), "{err}");
    let f = TrackFrame {
        stream_id: "or-1".into(),
        tracks: vec![TrackedInstance {
            label: "hook".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = decode::<TrackFrame>(&encode(&f)).unwrap_err().to_string();
    assert!(err.contains("tracks.track_id: 0 for \"hook\""), "{err}");
}

fn ok_result(instances: Vec<Instance>) -> FrameResult {
    FrameResult {
        stream_id: "or-1".into(),
        status: FrameStatus::Ok as i32,
        model: Some(ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            digest: "sha256:00".into(),
        }),
        instances,
        ..Default::default()
    }
}

fn tool(score: f32, centroid: Point) -> Instance {
    Instance {
        class_id: 1,
        label: "grasper".into(),
        category: Category::Tool as i32,
        score,
        bbox: Some(BBox {
            x0: 0.1,
            y0: 0.1,
            x1: 0.2,
            y1: 0.2,
        }),
        area: 0.01,
        centroid: Some(centroid),
        mask: None,
    }
}

/// Messages that decode as protobuf but carry values no consumer can use: each is refused with
/// the field named, so it goes to the dead-letter topic instead of the tracker or the record.
#[test]
fn hostile_values_are_refused_with_the_field_named() {
    let centre = Point { x: 0.5, y: 0.5 };
    let mut cases: Vec<(FrameResult, &str)> = Vec::new();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5, -0.1] {
        cases.push((ok_result(vec![tool(bad, centre)]), "instances.score"));
        cases.push((
            ok_result(vec![tool(0.9, Point { x: bad, y: 0.5 })]),
            "instances.centroid",
        ));
        let mut boxed = tool(0.9, centre);
        boxed.bbox.as_mut().unwrap().y1 = bad;
        cases.push((ok_result(vec![boxed]), "instances.bbox"));
        let mut area = tool(0.9, centre);
        area.area = bad;
        cases.push((ok_result(vec![area]), "instances.area"));
    }
    let mut inverted = tool(0.9, centre);
    inverted.bbox.as_mut().unwrap().x0 = 0.9;
    cases.push((ok_result(vec![inverted]), "far corner"));
    let mut nul = tool(0.9, centre);
    nul.label = "gra\0sper".into();
    cases.push((
        ok_result(vec![nul]),
        "instances.label: contains the control character '\\0'",
    ));
    let mut long = tool(0.9, centre);
    long.label = "x".repeat(300);
    cases.push((ok_result(vec![long]), "instances.label: 300 bytes"));
    let mut model = ok_result(vec![]);
    model.model.as_mut().unwrap().name = "m\0".into();
    cases.push((model, "model.name"));
    let mut detail = ok_result(vec![]);
    detail.status_detail = "bad\0".into();
    cases.push((detail, "status_detail"));
    let many = vec![tool(0.9, centre); 5_000];
    cases.push((ok_result(many), "instances: 5000 entries, more than 1024"));
    let mut huge_mask = tool(0.9, centre);
    huge_mask.mask = Some(orstream_proto::RleMask {
        width: 100_000,
        height: 100_000,
        counts: vec![u32::MAX, u32::MAX],
    });
    cases.push((
        ok_result(vec![huge_mask]),
        "instances.mask: instance 0: 100000x100000",
    ));
    for (result, expected) in cases {
        let err = decode::<FrameResult>(&encode(&result)).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
    let detail = FrameResult {
        status_detail: "line one\nline two\tand a tab".into(),
        ..ok_result(vec![tool(1.0, Point { x: 0.0, y: 1.0 })])
    };
    assert!(
        decode::<FrameResult>(&encode(&detail)).is_ok(),
        "line breaks, tabs and the bounds are valid"
    );
}

#[test]
fn hostile_values_in_events_and_track_frames_are_refused() {
    let event = SurgicalEvent {
        event_id: "e1".into(),
        stream_id: "or-1".into(),
        kind: EventKind::Presence as i32,
        peak_confidence: 0.9,
        mean_confidence: 0.8,
        ..Default::default()
    };
    assert!(decode::<SurgicalEvent>(&encode(&event)).is_ok());
    for (bad, expected) in [
        (
            SurgicalEvent {
                mean_confidence: f32::NAN,
                ..event.clone()
            },
            "mean_confidence",
        ),
        (
            SurgicalEvent {
                label: "a\0".into(),
                ..event.clone()
            },
            "label",
        ),
    ] {
        let err = decode::<SurgicalEvent>(&encode(&bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err} lacks {expected}");
    }
    let frame = TrackFrame {
        stream_id: "or-1".into(),
        tracks: vec![TrackedInstance {
            track_id: 1,
            label: "hook".into(),
            velocity: Some(Point {
                x: f32::INFINITY,
                y: 0.0,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = decode::<TrackFrame>(&encode(&frame))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tracks.velocity: track 0: inf"), "{err}");
}

#[test]
fn lifecycle_events_with_hostile_text_or_numbers_are_refused_and_producers_can_fit_them() {
    let event = |kind| StreamEvent {
        stream_id: "or-1".into(),
        kind: Some(kind),
        ..Default::default()
    };
    let long = "x".repeat(5_000);
    for (kind, field) in [
        (
            stream_event::Kind::Error(orstream_proto::StreamError {
                message: "bad\0".into(),
                fatal: false,
            }),
            "error.message",
        ),
        (
            stream_event::Kind::Discontinuity(StreamDiscontinuity {
                reason: long.clone(),
                ..Default::default()
            }),
            "discontinuity.reason",
        ),
        (
            stream_event::Kind::Started(orstream_proto::StreamStarted {
                source_kind: "rtsp".into(),
                width: 640,
                height: 360,
                fps: f64::NAN,
            }),
            "started.fps",
        ),
    ] {
        let err = decode::<StreamEvent>(&encode(&event(kind.clone())))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err} lacks {field}");
        let mut fitted = kind;
        orstream_proto::wire::fit_event_text(&mut fitted);
        if field != "started.fps" {
            decode::<StreamEvent>(&encode(&event(fitted))).expect("fitted text passes");
        }
    }
    let fitted = orstream_proto::wire::fit_detail(&format!("é{long}\u{1b}"));
    assert!(fitted.len() <= orstream_proto::wire::MAX_DETAIL_LEN);
    assert!(fitted.starts_with('é') && !fitted.contains('\u{1b}'));
    assert_eq!(orstream_proto::wire::fit_detail("a\nb\tc\0d"), "a\nb\tc d");
}
