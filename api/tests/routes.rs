//! The API's answers on an empty record: access, parameters, unknown cases, the rate limit,
//! the page, and the live feed's rooms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orstream_api::Api;
use orstream_api::access::Tokens;
use orstream_record::BackendKind;
use orstream_test_support::store::isolated;

const TOKENS: &str = "quality admin * q-0123456789abcdef\nteam reader OR3 t-0123456789abcdef\n";

fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut request = agent.get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// Serves `api` on a free port of loopback; the runtime serves while it is kept.
fn serve(api: Api) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, api.router()).await });
    (runtime, base)
}

/// An API over an empty record (the schema is made by the first open).
fn empty_record() -> (orstream_test_support::store::IsolatedStore, Api) {
    let store = isolated(BackendKind::Sqlite).unwrap();
    drop(store.open().unwrap());
    let api = Api::new(store.url(), Tokens::parse(TOKENS).unwrap());
    (store, api)
}

#[test]
fn access_parameters_and_unknown_cases() {
    let (_store, api) = empty_record();
    let (_runtime, base) = serve(api);

    let (status, body) = get(&base, "/v1/cases", None);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("cases"), "{body}");
    let (status, _) = get(&base, "/v1/cases", Some("t-0123456789abcdeX"));
    assert_eq!(status, 401);
    let (status, body) = get(&base, "/v1/cases", Some("q-0123456789abcdef"));
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 0);
    for (query, problem) in [
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("from_ns=10&to_ns=5", "after to_ns"),
        ("limit=ten", "limit"),
        ("colour=red", "colour"),
        ("room=OR%003", "room: not a usable id"),
        ("room=", "room: not a usable id"),
    ] {
        let (status, body) = get(
            &base,
            &format!("/v1/cases?{query}"),
            Some("t-0123456789abcdef"),
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(problem), "{query}: {body}");
    }
    // A case id with a control character is refused before it reaches the audit.
    let (status, body) = get(&base, "/v1/live?case=a%01b", Some("q-0123456789abcdef"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("case: not a usable id"), "{body}");
    let (status, body) = get(&base, "/v1/cases/nope/timeline", Some("q-0123456789abcdef"));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn every_route_is_described_and_every_description_is_served() {
    let described: Vec<&str> = orstream_api::OPENAPI
        .lines()
        .filter_map(|line| line.strip_prefix("  /"))
        .map(|rest| rest.trim_end_matches(':'))
        .collect();
    let served: Vec<&str> = orstream_api::ROUTES
        .iter()
        .map(|r| r.trim_start_matches('/'))
        .collect();
    assert_eq!(described, served);

    let (_store, api) = empty_record();
    let (_runtime, base) = serve(api);
    for route in orstream_api::ROUTES {
        let path = route.replace("{case}", "no-such-case");
        if *route == "/v1/live" {
            // An endless stream: its head only.
            let response = ureq::get(format!("{base}{path}"))
                .header("Authorization", "Bearer q-0123456789abcdef")
                .call()
                .unwrap();
            assert_eq!(
                response.headers().get("content-type").unwrap(),
                "text/event-stream"
            );
            continue;
        }
        let (status, body) = get(&base, &path, Some("q-0123456789abcdef"));
        // The router's own 404 (no such route) has no body; ours names the error.
        assert!(
            status == 200 || body.contains("error"),
            "{route}: {status} {body}"
        );
    }
}

#[test]
fn a_caller_beyond_its_rate_gets_429_and_others_are_not_held_up() {
    let (_store, api) = empty_record();
    let (_runtime, base) = serve(api.with_rate(1, 2));
    for _ in 0..2 {
        assert_eq!(get(&base, "/v1/rooms", Some("t-0123456789abcdef")).0, 200);
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let response = agent
        .get(format!("{base}/v1/rooms"))
        .header("Authorization", "Bearer t-0123456789abcdef")
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another token has its own bucket.
    assert_eq!(get(&base, "/v1/rooms", Some("q-0123456789abcdef")).0, 200);
}

#[test]
fn the_page_is_served_without_a_token_and_holds_no_data() {
    let (_store, api) = empty_record();
    let (_runtime, base) = serve(api);
    for path in orstream_api::page::PATHS {
        let mut response = ureq::get(format!("{base}{path}")).call().unwrap();
        assert!(
            response
                .headers()
                .get("content-security-policy")
                .is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'")),
            "{path}"
        );
        let body = response.body_mut().read_to_string().unwrap();
        assert!(!body.is_empty(), "{path}");
    }
}

#[test]
fn the_live_feed_passes_on_only_the_rooms_a_reader_may_see() {
    use std::io::BufRead;
    let (_store, api) = empty_record();
    let live = orstream_api::live::Live::new();
    let (_runtime, base) = serve(api.with_live(live.clone()));
    let response = ureq::get(format!("{base}/v1/live"))
        .header("Authorization", "Bearer t-0123456789abcdef")
        .call()
        .unwrap();
    let notice = |case: &str, room: &str| orstream_api::live::Notice {
        name: "record",
        case_id: case.to_owned(),
        room_id: room.to_owned(),
        data: serde_json::json!({ "case_id": case, "event_id": format!("e-{case}") }),
    };
    // The team reads OR3 only: OR4's case and a case of no room are not passed on.
    live.publish(notice("case-or4", "OR4"));
    live.publish(notice("case-none", ""));
    live.publish(notice("case-or3", "OR3"));
    let lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
    let mut seen = Vec::new();
    for line in lines {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data:") {
            seen.push(data.trim().to_owned());
            break;
        }
        if !line.is_empty() && !line.starts_with(':') {
            assert_eq!(line, "event: record");
        }
    }
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("case-or3"), "{seen:?}");
}
