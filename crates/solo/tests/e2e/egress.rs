//! Egress from outside: an admin allows a tenant's destinations (the CLI), the tenant
//! binds a key to a host, and its services reach HTTP and HTTPS servers on 127.0.0.1
//! (JavaScript `fetch`, and a component using `wstd` over `wasi:http`) with the key
//! substituted on the way out; the receiving server sees the key, the guest, its logs
//! and the event log never do. Every bad input is refused, recorded, and costs the
//! server and other tenants nothing.

use serde_json::{Value, json};
use solo_egress::testing::{TestServer, tls_for_localhost};
use solo_proto::v1 as pb;

use crate::deploy_js;
use crate::harness::{Server, call, reason};

const KEY: &str = "sk-live-4f3c2a19e8d7";

/// Fetches what it is asked and says what came back, or the error's code.
const FETCH_JS: &str = r#"
export async function handleCall(r) {
  try {
    const init = { method: r.method ?? "GET", headers: r.headers ?? {} };
    if (r.body !== undefined) init.body = r.body;
    const res = await fetch(r.url, init);
    const out = { status: res.status, ok: res.ok, type: res.headers.get("content-type") };
    if (r.as === "json") out.json = await res.json();
    else if (r.as === "bytes") out.len = (await res.arrayBuffer()).byteLength;
    else out.text = await res.text();
    return out;
  } catch (e) {
    return { error: e.code ?? null, message: String(e.message), type: e.constructor.name };
  }
}"#;

async fn fetch(c: &mut solo_client::Client, id: &str, request: Value) -> Value {
    let r = c
        .call(pb::CallRequest {
            timeout_ms: 10_000,
            ..call(id, request)
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.reply).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_allowed_apis_with_injected_keys_and_nothing_else() {
    let api = TestServer::start(None).await.unwrap();
    let (tls, _, ca_pem) = tls_for_localhost().unwrap();
    let secure = TestServer::start(Some(tls)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("egress-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let s = Server::start_in(
        dir,
        &[
            ("SOLO_EGRESS__EXTRA_CA_FILE", ca_file.to_str().unwrap()),
            ("SOLO_EGRESS__TOTAL_TIMEOUT_MS", "1500"),
            ("SOLO_EGRESS__MAX_RESPONSE_BYTES", "1048576"),
        ],
    );
    let (http, https) = (
        format!("http://{}", api.addr),
        format!("https://{}", secure.addr),
    );
    // Rules that let requests past the host check to the address check.
    let traps = [
        "http://169.254.169.254:*",
        "http://[::1]:*",
        "http://0.0.0.0:*",
        "http://localhost:*",
    ];
    let mut allow = vec!["egress", "allow", "alice", http.as_str(), https.as_str()];
    allow.extend(traps);
    let rules = s.cli_json(&allow);
    assert_eq!(rules["tenant"], "alice");
    assert!(rules["rules"].as_array().unwrap().len() == 6, "{rules}");

    let (mut alice, mut bob) = (s.tenant("alice").await, s.tenant("bob").await);
    for (name, value) in [("API_KEY", KEY), ("OTHER", "other-value")] {
        alice
            .put_secret(pb::PutSecretRequest {
                name: name.into(),
                value: value.into(),
            })
            .await
            .unwrap();
    }
    let bound = alice
        .bind_secret(pb::BindSecretRequest {
            name: "API_KEY".into(),
            hosts: vec![http.clone()],
            unbind: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bound.hosts, std::slice::from_ref(&http));

    let mut service_rules = vec![http.clone(), https.clone()];
    service_rules.extend(traps.map(String::from));
    alice
        .deploy(pb::DeployRequest {
            secrets: vec!["API_KEY".into(), "OTHER".into()],
            egress: service_rules.clone(),
            ..deploy_js("js", FETCH_JS.into())
        })
        .await
        .unwrap();

    // The key reaches the API, and only the API.
    let r = fetch(
        &mut alice,
        "js",
        json!({ "url": format!("{http}/hello"), "headers": { "x-api-key": "{{secret:API_KEY}}" } }),
    )
    .await;
    assert_eq!(
        (r["status"].as_u64(), r["text"].as_str()),
        (Some(200), Some("hello")),
        "{r}"
    );
    let seen = api.seen().pop().unwrap();
    assert!(
        seen.headers.contains(&("x-api-key".into(), KEY.into())),
        "{seen:?}"
    );
    let r = fetch(
        &mut alice,
        "js",
        json!({ "url": format!("{http}/json"), "as": "json" }),
    )
    .await;
    assert_eq!(
        (r["json"]["n"].as_u64(), r["type"].as_str()),
        (Some(1), Some("application/json")),
        "{r}"
    );
    let r = fetch(
        &mut alice,
        "js",
        json!({ "url": format!("{http}/echo"), "method": "POST", "body": "ping" }),
    )
    .await;
    assert_eq!(r["text"], "ping", "{r}");
    let r = fetch(&mut alice, "js", json!({ "url": format!("{https}/hello") })).await;
    assert_eq!(r["text"], "hello", "https with the configured CA: {r}");

    // Each bad input: a clear error to the guest, with its code.
    let refusals = [
        (json!({ "url": "https://example.com/" }), "host_not_allowed"),
        (
            json!({ "url": format!("http://127.0.0.1:{}/", secure.addr.port()) }),
            "host_not_allowed",
        ),
        (
            json!({ "url": "http://169.254.169.254/latest/meta-data" }),
            "private_address",
        ),
        (
            json!({ "url": format!("http://[::1]:{}/hello", api.addr.port()) }),
            "private_address",
        ),
        (
            json!({ "url": format!("http://0.0.0.0:{}/hello", api.addr.port()) }),
            "private_address",
        ),
        // A name that resolves to a private address no rule names exactly.
        (
            json!({ "url": format!("http://localhost:{}/hello", secure.addr.port()) }),
            "private_address",
        ),
        (
            json!({ "url": format!("{http}/to?https://example.com/") }),
            "host_not_allowed",
        ),
        (
            json!({ "url": format!("{http}/to?http://169.254.169.254/") }),
            "private_address",
        ),
        (
            json!({ "url": format!("{http}/hello"), "headers": { "x-key": "{{secret:OTHER}}" } }),
            "secret_not_bound",
        ),
        (
            json!({ "url": format!("{http}/hello"), "headers": { "x-key": "{{secret:UNLISTED}}" } }),
            "secret_not_bound",
        ),
        // Bound to the API's scheme, host and port: not to the other server on this host.
        (
            json!({ "url": format!("{https}/hello"), "headers": { "x-key": "{{secret:API_KEY}}" } }),
            "secret_not_bound",
        ),
        (json!({ "url": "http://[::1" }), "invalid_request"),
        (json!({ "url": "gopher://example.com/" }), "invalid_request"),
        (
            json!({ "url": format!("{http}/hello"), "headers": { "bad header": "x" } }),
            "invalid_request",
        ),
        (json!({ "url": format!("{http}/big") }), "limit"),
        (json!({ "url": format!("{http}/forever") }), "timeout"),
    ];
    for (request, code) in &refusals {
        let r = fetch(&mut alice, "js", request.clone()).await;
        assert_eq!(
            (r["error"].as_str(), r["type"].as_str()),
            (Some(*code), Some("TypeError")),
            "{request}: {r}"
        );
    }

    // A component with an ordinary WASI HTTP client, under the same rules.
    alice
        .deploy(pb::DeployRequest {
            service_id: "wasm".into(),
            format: pb::deploy_request::DeployFormat::WasmComponent as i32,
            code_bytes: solo_guests::wasm("fetcher"),
            egress: service_rules,
            ..pb::DeployRequest::default()
        })
        .await
        .unwrap();
    for url in [format!("{http}/hello"), format!("{https}/hello")] {
        let r = fetch(&mut alice, "wasm", json!({ "url": url })).await;
        assert_eq!(
            (r["status"].as_u64(), r["body"].as_str()),
            (Some(200), Some("hello")),
            "{r}"
        );
    }
    let e = alice
        .call(call("wasm", json!({ "url": "https://example.com/" })))
        .await
        .unwrap_err();
    assert!(e.message().contains("HttpRequestDenied"), "{}", e.message());
    let e = alice
        .call(call("wasm", json!({ "url": "http://169.254.169.254/" })))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("DestinationIpProhibited"),
        "{}",
        e.message()
    );

    // A component opening more requests than its service may have in flight.
    s.cli_json(&["config", "set", "egress.max_in_flight_per_service", "1"]);
    let forever = format!("{http}/forever");
    let r = fetch(&mut alice, "wasm", json!({ "urls": [forever, forever] })).await;
    let errors: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["error"].as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{r}");
    assert!(
        errors.iter().any(|e| e.contains("ConnectionLimitReached")),
        "{r}"
    );
    assert!(
        errors.iter().any(|e| e.contains("HttpResponseTimeout")),
        "{r}"
    );
    s.cli_json(&["config", "set", "egress.max_in_flight_per_service", "8"]);

    // The key is nowhere but at the API: not in replies (above), logs or events.
    let mut logs = alice
        .logs(pb::LogsRequest {
            service_id: "js".into(),
            tail: 1000,
            ..pb::LogsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(Ok(l)) = futures::StreamExt::next(&mut logs).await {
        lines.push(l.message);
    }
    assert!(
        lines.iter().any(|l| l.contains("private_address")),
        "refusals are logged: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(KEY)),
        "the key is in the service's log"
    );
    // Policy is the admin's; a tenant sees only its own rules.
    let deny = bob
        .change_egress(pb::ChangeEgressRequest {
            tenant: "bob".into(),
            rules: vec!["example.com".into()],
            allow: true,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&deny), "admin_only");
    let own = bob
        .list_egress(pb::ListEgressRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.tenants.len(), 1);
    assert!(own.tenants[0].rules.is_empty());
    let e = bob
        .list_egress(pb::ListEgressRequest {
            tenant: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "admin_only");
    let e = bob
        .deploy(pb::DeployRequest {
            egress: vec![http.clone()],
            ..deploy_js("js", FETCH_JS.into())
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains("solo egress allow bob"),
        "{}",
        e.message()
    );

    // Refusals are sampled (five a second per tenant); a new second records again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = fetch(
        &mut alice,
        "js",
        json!({ "url": format!("{http}/hello"), "headers": { "x-key": "{{secret:OTHER}}" } }),
    )
    .await;
    assert_eq!(r["error"], "secret_not_bound", "{r}");

    // The admin's rate and rules apply at once.
    s.cli_json(&["config", "set", "egress.burst_per_tenant", "1"]);
    s.cli_json(&["config", "set", "egress.rate_per_tenant", "1"]);
    let url = json!({ "url": format!("{http}/hello") });
    let (a, b) = (
        fetch(&mut alice, "js", url.clone()).await,
        fetch(&mut alice, "js", url).await,
    );
    assert!(a["status"] == 200 || a["error"] == "limit", "{a}");
    assert_eq!(b["error"], "limit", "{b}");
    s.cli_json(&["config", "set", "egress.rate_per_tenant", "0"]);
    s.cli_json(&["egress", "deny", "alice", http.as_str()]);
    let r = fetch(&mut alice, "js", json!({ "url": format!("{http}/hello") })).await;
    assert_eq!(
        r["error"], "host_not_allowed",
        "a removed rule applies at once: {r}"
    );

    let events = s.cli_json(&["events", "--of-tenant", "alice", "--limit", "1000"]);
    let text = events.to_string();
    assert!(!text.contains(KEY), "the key is in the event log");
    let all: Vec<&Value> = events["events"].as_array().unwrap().iter().collect();
    let request = all
        .iter()
        .find(|e| {
            e["event_type"] == "egress_request" && e["payload"]["secrets"] == json!(["API_KEY"])
        })
        .unwrap_or_else(|| panic!("no egress_request naming the secret: {text}"));
    assert_eq!(request["payload"]["status"], 200);
    for reason in [
        "host_not_allowed",
        "private_address",
        "secret_not_bound",
        "limit",
    ] {
        assert!(
            all.iter()
                .any(|e| e["event_type"] == "egress_denied" && e["payload"]["reason"] == reason),
            "no egress_denied for {reason}"
        );
    }
    assert!(
        all.iter().any(|e| e["event_type"] == "egress_denied"
            && e["payload"]["suppressed_before"].as_u64() > Some(0)),
        "a flood of refusals is sampled, with the count of those left out"
    );
    let timeout = all
        .iter()
        .find(|e| e["event_type"] == "egress_request" && e["payload"]["reason"] == "timeout");
    assert!(
        timeout.is_some(),
        "a request the network failed is an egress_request"
    );

    // The same over REST.
    let rest = s.rest(&s.tenant_profile("alice"));
    let (code, v) = rest.get("/v1/egress").await;
    assert_eq!(
        (code, &v["tenants"][0]["tenant"]),
        (200, &json!("alice")),
        "{v}"
    );
    let (code, v) = rest
        .post(
            "/v1/egress/alice/allow",
            &json!({ "rules": ["example.com"] }),
        )
        .await;
    assert_eq!((code, &v["error"]), (403, &json!("admin_only")), "{v}");
    let (code, v) = rest
        .post(
            "/v1/secrets/API_KEY/hosts",
            &json!({ "hosts": ["*.example.com"] }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .contains(&json!("https://*.example.com:443")),
        "{v}"
    );
    let admin = s.rest(&s.admin_profile());
    let (code, v) = admin
        .post(
            "/v1/egress/alice/allow",
            &json!({ "rules": ["api.example.com"] }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .contains(&json!("https://api.example.com:443")),
        "{v}"
    );
    let (code, _) = admin
        .post("/v1/egress/alice/maybe", &json!({ "rules": ["x.org"] }))
        .await;
    assert_eq!(code, 404);
    let (code, v) = admin
        .post(
            "/v1/egress/alice/allow",
            &json!({ "rules": ["ftp://x.org"] }),
        )
        .await;
    assert_eq!(
        (code, &v["error"]),
        (400, &json!("invalid_argument")),
        "{v}"
    );

    let metrics = String::from_utf8(s.cli(&["metrics"]).stdout).unwrap();
    for outcome in ["ok", "denied", "failed"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("solo_egress_requests_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("tenant=\"alice\"")),
            "no {outcome} count in the metrics"
        );
    }
    let health = s.cli_json(&["health"]);
    assert_eq!(health["status"], "ok", "{health}");
}
