//! The record page in a real browser: headless Chromium drives the page of a running
//! `orstream api` (the service binary, over the real PostgreSQL, following the real broker)
//! while the demo clip plays as a live camera through ingest, infer and the sink.
//!
//! A reader of room OR1 signs in with its token, sees its room and the running case, opens it,
//! and watches the events of the live run appear as the sink commits them (the test prints how
//! long each took from the commit to the page; the figures are not asserted). A case of another room is in the same record: the
//! reader's page never shows it, and asking for it by id answers "no such case". When the
//! run ends, the page shows the case ended and complete, with every event of the record and
//! the camera's accounting. The reader's reads are in the record's audit.
//!
//! Needs `scripts/kafka.sh start`, `scripts/postgres.sh start` and Debian's chromium and
//! chromium-driver (`scripts/install-packages.sh`); fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orstream::demo::{DemoOptions, run};
use orstream_record::BackendKind;
use orstream_record::schema::CaseRoomRow;
use orstream_record::store::WriteBatch;
use orstream_test_support::browser::Browser;
use orstream_test_support::kafka;
use orstream_test_support::metrics::free_port;
use orstream_test_support::names::unique;
use orstream_test_support::service::Service;
use orstream_test_support::store::isolated;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const READER: &str = "or1-team-5b2f0c8e71d4";
const ADMIN: &str = "quality-9a4c1e7b3f60";
/// The demo's room.
const ROOM: &str = "OR1";

#[test]
fn a_reader_follows_a_live_case_in_the_browser_and_never_sees_another_room() {
    let store = isolated(BackendKind::Postgres).unwrap();
    // A case of another room, in the same record.
    let secret_case = unique("case-secret");
    let secret_room = "OR7";
    store
        .open()
        .unwrap()
        .write(&WriteBatch {
            case_rooms: vec![CaseRoomRow {
                case_id: secret_case.clone(),
                room_id: secret_room.to_owned(),
                opened_ns: Some(orstream_shell::clock::now_ns()),
                closed_ns: None,
                close_detail: String::new(),
            }],
            ..WriteBatch::default()
        })
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("api.tokens");
    std::fs::write(
        &tokens,
        format!("quality admin * {ADMIN}\nor1-team reader {ROOM} {READER}\n"),
    )
    .unwrap();
    let listen = free_port();
    let bootstrap = kafka::config().bootstrap_servers;
    let group = unique("test.page.api");
    let api = Service::start(ORSTREAM, ROOT, "api", |health| {
        format!(
            "listen = \"{listen}\"\nstore = \"{}\"\ntokens_file = \"{}\"\ngroup_id = \"{group}\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [telemetry]\nmetrics_listen = \"{health}\"\nlog_filter = \"info\"\n",
            store.url(),
            tokens.display(),
        )
    });
    api.wait_ready("the record API");
    let base = format!("http://{listen}/");

    // The admin sees the other room's case: it is there to be hidden.
    let admin_view = get_json(&base, "v1/rooms", ADMIN);
    assert!(
        admin_view["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == secret_room),
        "{admin_view}"
    );

    // The live run: the demo clip at camera pace over the broker into the record.
    let out = dir.path().join("demo");
    let options = DemoOptions {
        kafka: Some(bootstrap),
        postgres: Some(store.url().to_owned()),
        progress_every: None,
        page: None,
        ..DemoOptions::archive_quiet(out)
    };
    let options = DemoOptions {
        archive: false,
        ..options
    };
    let demo = std::thread::spawn(move || run(&options, &CancellationToken::new()));

    // When each event's row is first in the record, polled every 20 ms.
    let committed: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watching = CancellationToken::new();
    let watcher = {
        let committed = Arc::clone(&committed);
        let watching = watching.clone();
        let mut record = store.open().unwrap();
        std::thread::spawn(move || {
            while !watching.is_cancelled() {
                let rows = record
                    .query("SELECT event_id FROM events", &[])
                    .unwrap_or_default();
                let now = Instant::now();
                let mut seen = committed.lock().unwrap();
                for row in rows {
                    seen.entry(row[0].text().to_owned()).or_insert(now);
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let browser = Browser::start().unwrap();
    browser.goto(&base).unwrap();
    let field = browser.find("#token").unwrap();
    browser.type_into(&field, READER).unwrap();
    browser.click(&browser.find("#sign-in").unwrap()).unwrap();
    browser
        .wait_for(
            "the running case in the reader's room",
            Duration::from_secs(180),
            &format!(
                "return document.querySelector('#rooms li[data-room=\"{ROOM}\"] .badge.live') !== null"
            ),
        )
        .unwrap();
    let case_id = browser
        .wait_for(
            "the live case in the list",
            Duration::from_secs(30),
            "const live = [...document.querySelectorAll('#cases li')]
               .find((li) => li.querySelector('.badge.live'));
             return live ? live.dataset.case : null;",
        )
        .unwrap();
    let case_id = case_id.as_str().unwrap().to_owned();
    browser
        .click(
            &browser
                .find(&format!("#cases li[data-case=\"{case_id}\"]"))
                .unwrap(),
        )
        .unwrap();
    browser
        .wait_for(
            "the case view, marked live",
            Duration::from_secs(30),
            "return document.getElementById('case-live') !== null",
        )
        .unwrap();
    assert_eq!(
        browser
            .run(
                "return document.getElementById('live-state').textContent",
                &[]
            )
            .unwrap(),
        "live: on"
    );

    // Events appear while the run goes on: an interval still open is on the page (fetched)
    // before it is stored as an event; note when each event's push reached the page.
    let mut shown: BTreeMap<String, Instant> = BTreeMap::new();
    let mut pushed: BTreeMap<String, Instant> = BTreeMap::new();
    let started = Instant::now();
    while !demo.is_finished() && started.elapsed() < Duration::from_secs(600) {
        let rows = browser
            .run(
                "return [...document.querySelectorAll('#events tbody tr')]
                   .map((tr) => [tr.dataset.eventId, tr.classList.contains('fresh')])",
                &[],
            )
            .unwrap();
        let now = Instant::now();
        for row in rows.as_array().unwrap() {
            let id = row[0].as_str().unwrap().to_owned();
            if row[1] == true {
                pushed.entry(id.clone()).or_insert(now);
            }
            shown.entry(id).or_insert(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = demo.join().unwrap().unwrap();
    assert_eq!(report.case_id, case_id);
    assert!(report.all_accounted(), "{report:?}");
    watching.cancel();
    watcher.join().unwrap();
    assert!(
        !pushed.is_empty(),
        "no event was pushed to the page during the live run; rows seen: {shown:?}"
    );
    let committed = committed.lock().unwrap().clone();
    let mut delays_ms: Vec<f64> = pushed
        .iter()
        .filter_map(|(id, on_page)| {
            let at = committed.get(id)?;
            Some(on_page.saturating_duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    delays_ms.sort_by(f64::total_cmp);
    assert!(!delays_ms.is_empty(), "pushed events are in the record");
    let p50 = delays_ms[delays_ms.len() / 2];
    let max = delays_ms[delays_ms.len() - 1];
    println!(
        "record page | {} events pushed during the live run ({} rows shown in all); record commit -> pushed onto the page: p50 {p50:.0} ms, max {max:.0} ms (the record polled every 20 ms, the page every 50 ms)",
        delays_ms.len(),
        shown.len()
    );
    // The end: the case ended and complete, every event of the record on the page.
    let timeline = get_json(&base, &format!("v1/cases/{case_id}/timeline"), ADMIN);
    let expected = ["events", "gaps", "tracks"]
        .iter()
        .map(|k| timeline[k].as_array().unwrap().len())
        .sum::<usize>();
    browser
        .wait_for(
            "the ended case, complete, with every event",
            Duration::from_secs(30),
            &format!(
                "return document.getElementById('case-live') === null
                   && document.getElementById('incomplete').hidden
                   && document.querySelectorAll('#events tbody tr').length === {expected}
                   && document.querySelector('#accounting tbody tr td:last-child')
                        .textContent === 'yes'"
            ),
        )
        .unwrap();

    // The other room is nowhere on the reader's page, and asking for its case by id fails.
    let text = browser.run("return document.body.innerText", &[]).unwrap();
    let text = text.as_str().unwrap();
    assert!(
        !text.contains(secret_room) && !text.contains(&secret_case),
        "{text}"
    );
    browser.goto(&format!("{base}#case={secret_case}")).unwrap();
    let error = browser
        .wait_for(
            "the refusal of another room's case",
            Duration::from_secs(30),
            "const e = document.getElementById('error').textContent; return e || null;",
        )
        .unwrap();
    assert!(error.as_str().unwrap().contains("No such case"), "{error}");
    drop(browser);

    // Every read of the case by the reader is in the audit; the other case was never read.
    let audit = store.open().unwrap().audit().unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "or1-team" && a.case_id == case_id),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "or1-team" && a.action == "follow live" && a.case_id == "*"),
        "following the live feed is audited: {audit:?}"
    );
    assert!(!audit.iter().any(|a| a.case_id == secret_case), "{audit:?}");
    let log = api.stop();
    assert!(
        !log.contains(READER) && !log.contains(ADMIN),
        "no token in the log"
    );
}

fn get_json(base: &str, path: &str, token: &str) -> Value {
    let mut response = ureq::get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}
