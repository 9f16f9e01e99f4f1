//! The API's answers on an empty record: access, parameters, unknown cases.

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

#[test]
fn access_parameters_and_unknown_cases() {
    let store = isolated(BackendKind::Sqlite).unwrap();
    // The schema is made by the first open.
    drop(store.open().unwrap());
    let api = Api::new(store.url(), Tokens::parse(TOKENS).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, api.router()).await });

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
    ] {
        let (status, body) = get(
            &base,
            &format!("/v1/cases?{query}"),
            Some("t-0123456789abcdef"),
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(problem), "{query}: {body}");
    }
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

    let store = isolated(BackendKind::Sqlite).unwrap();
    drop(store.open().unwrap());
    let api = Api::new(store.url(), Tokens::parse(TOKENS).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, api.router()).await });
    for route in orstream_api::ROUTES {
        let path = route.replace("{case}", "no-such-case");
        let (status, body) = get(&base, &path, Some("q-0123456789abcdef"));
        // The router's own 404 (no such route) has no body; ours names the error.
        assert!(
            status == 200 || body.contains("error"),
            "{route}: {status} {body}"
        );
    }
}
