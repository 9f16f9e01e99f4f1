//! What the API's case reads cost on a long record, measured in one run: a record of
//! `--cases` closed cases (one camera each) in SQLite, or with `--postgres` in a fresh schema
//! of the PostgreSQL at `ORSTREAM_POSTGRES_URL` (`scripts/postgres.sh url`).
//!
//! - listing a page of 50 cases: every case's accounting read (`query::cases`, what a listing
//!   cost before) against the list read once and only the page's accounting
//!   (`query::case_list` + `query::settle`, what `/v1/cases` does);
//! - reading one case's summary (what each case route checks first): the whole list with
//!   every accounting against `query::case`.
//!
//! `cargo bench -p orstream-api --bench case_reads -- --cases 2000`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use orstream_record::query;
use orstream_record::schema::{CaseRoomRow, CaseRow, StreamEventRow, StreamRow};
use orstream_record::store::WriteBatch;
use orstream_record::{BackendKind, Store};
use orstream_sink::derive::StreamState;
use orstream_test_support::store::isolated;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The median of `runs` timings of `work`.
fn median(runs: usize, mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn fill(store: &mut Store, cases: usize) {
    let base = 1_800_000_000_000_000_000i64;
    for chunk in (0..cases).collect::<Vec<_>>().chunks(500) {
        let mut batch = WriteBatch::default();
        for &i in chunk {
            let case_id = format!("case-{i:05}");
            let stream_id = format!("OR{}/lap", i % 8);
            let start = base + i as i64 * 3_600_000_000_000;
            batch.cases.push(CaseRow {
                case_id: case_id.clone(),
                started_ns: start,
            });
            batch.case_rooms.push(CaseRoomRow {
                case_id: case_id.clone(),
                room_id: format!("OR{}", i % 8),
                opened_ns: Some(start),
                closed_ns: Some(start + 3_000_000_000_000),
                close_detail: String::new(),
            });
            batch.streams.push(StreamRow {
                case_id: case_id.clone(),
                stream_id: stream_id.clone(),
                first_frame_ns: start,
                last_frame_ns: start + 2_999_000_000_000,
                results: 36_000,
            });
            batch.stream_events.push(StreamEventRow {
                stream_id,
                case_id,
                session_epoch: 0,
                time_ns: start + 3_000_000_000_000,
                kind: "ended".to_owned(),
                detail: r#"{"reason":4,"frames_published":36000,"frames_dropped":0,"detail":""}"#
                    .to_owned(),
            });
        }
        store.write(&batch).unwrap();
    }
}

fn main() {
    let cases: usize = arg("--cases").map_or(2000, |v| v.parse().unwrap());
    let kind = if std::env::args().any(|a| a == "--postgres") {
        BackendKind::Postgres
    } else {
        BackendKind::Sqlite
    };
    let record = isolated(kind).unwrap();
    let mut store = record.open().unwrap();
    fill(&mut store, cases);
    let runs = 5;
    // The two ways give the same page.
    let full: Vec<_> = query::cases::<StreamState>(&mut store).unwrap()[..50].to_vec();
    let mut settled = query::case_list(&mut store).unwrap();
    settled.truncate(50);
    for case in &mut settled {
        query::settle::<StreamState>(&mut store, case).unwrap();
    }
    assert_eq!(full, settled);
    assert!(
        full.iter().all(|c| c.complete),
        "the filled cases are complete"
    );

    let everything = median(runs, || {
        let listed = query::cases::<StreamState>(&mut store).unwrap();
        assert_eq!(listed.len(), cases);
    });
    let page = median(runs, || {
        let mut listed = query::case_list(&mut store).unwrap();
        listed.truncate(50);
        for case in &mut listed {
            query::settle::<StreamState>(&mut store, case).unwrap();
        }
    });
    let one_of_all = median(runs, || {
        let found = query::cases::<StreamState>(&mut store)
            .unwrap()
            .into_iter()
            .find(|c| c.case_id == "case-00007");
        assert!(found.is_some());
    });
    let one = median(runs, || {
        let found = query::case::<StreamState>(&mut store, "case-00007").unwrap();
        assert!(found.is_some());
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "case reads | {cases} cases, {} | a page of 50: every accounting {:.1} ms, the page's only {:.1} ms ({:.0}x) | one case: every accounting {:.1} ms, its own only {:.1} ms ({:.0}x) | medians of {runs}",
        record.kind().name(),
        ms(everything),
        ms(page),
        everything.as_secs_f64() / page.as_secs_f64(),
        ms(one_of_all),
        ms(one),
        one_of_all.as_secs_f64() / one.as_secs_f64(),
    );
}
