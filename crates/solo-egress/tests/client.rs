//! The egress client against HTTP and HTTPS servers on 127.0.0.1: what an allowed request
//! gets, and each refusal (a host outside the rules, private addresses, redirects out of
//! bounds, caps, a response that never ends, an untrusted certificate).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use solo_egress::testing::{TestServer, tls_for_localhost};
use solo_egress::{
    Client, Denied, EgressLimits, HeaderName, HeaderValue, Method, Policy, Request, parse_rules,
};

async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    TestServer::start(tls).await.unwrap().addr
}

fn policy(rules: &[&str]) -> Policy {
    let rules: Arc<[_]> = parse_rules(rules).unwrap().into();
    Policy {
        tenant: rules.clone(),
        service: rules,
    }
}

fn get(url: String) -> Request {
    Request {
        method: Method::GET,
        url,
        headers: Vec::new(),
        body: Bytes::new(),
        secret_headers: Vec::new(),
    }
}

fn client(limits: EgressLimits, roots: &[CertificateDer<'static>]) -> Client {
    Client::new(limits, roots).unwrap()
}

#[tokio::test]
async fn an_allowed_request_is_answered_and_others_are_refused_before_connecting() {
    let a = serve(None).await;
    let c = client(EgressLimits::default(), &[]);
    let exact = format!("http://{a}");
    let r = c
        .send(get(format!("http://{a}/hello")), &policy(&[&exact]))
        .await
        .unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    assert_eq!(r.destination, format!("http://{a}"));

    // Not in the rules at all, or the service's rules narrower than the tenant's.
    let e = c
        .send(get(format!("http://{a}/hello")), &policy(&["example.com"]))
        .await;
    assert!(matches!(e, Err(Denied::HostNotAllowed(_))), "{e:?}");
    let narrowed = Policy {
        tenant: parse_rules(&[exact.as_str()]).unwrap().into(),
        service: parse_rules(&["example.com"]).unwrap().into(),
    };
    let e = c.send(get(format!("http://{a}/hello")), &narrowed).await;
    assert!(matches!(e, Err(Denied::HostNotAllowed(_))), "{e:?}");

    // Private addresses need a rule naming that exact address and port.
    let port = a.port();
    for (url, rules) in [
        (
            format!("http://127.0.0.1:{port}/hello"),
            "http://127.0.0.1:*".to_string(),
        ),
        (
            format!("http://localhost:{port}/hello"),
            format!("http://localhost:{port}"),
        ),
        // Never, even named exactly: the unspecified address means this machine.
        ("http://0.0.0.0/".to_string(), "http://0.0.0.0".to_string()),
        (
            format!("http://0.0.0.0:{port}/"),
            format!("http://0.0.0.0:{port}"),
        ),
        (
            "http://169.254.169.254/".to_string(),
            "http://169.254.169.254:*".to_string(),
        ),
        (
            format!("http://[::1]:{port}/"),
            "http://[::1]:*".to_string(),
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "http://[::ffff:127.0.0.1]:*".to_string(),
        ),
    ] {
        let e = c.send(get(url.clone()), &policy(&[&rules])).await;
        assert!(matches!(e, Err(Denied::PrivateAddress(_))), "{url}: {e:?}");
    }
    // A name resolving to a private address passes when the address is named exactly.
    let both = [format!("http://localhost:{port}"), exact.clone()];
    let r = c
        .send(
            get(format!("http://localhost:{port}/hello")),
            &policy(&[&both[0], &both[1]]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    for bad in [
        "not a url",
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "http://[::1/",
        "http://a..b/",
    ] {
        let e = c.send(get(bad.to_string()), &policy(&[&exact])).await;
        assert!(matches!(e, Err(Denied::BadRequest(_))), "{bad}: {e:?}");
    }
}

#[tokio::test]
async fn redirects_are_followed_only_where_allowed_and_secrets_stay_behind() {
    let (sa, sb) = (
        TestServer::start(None).await.unwrap(),
        TestServer::start(None).await.unwrap(),
    );
    let (a, b) = (sa.addr, sb.addr);
    let c = client(EgressLimits::default(), &[]);
    let (ra, rb) = (format!("http://{a}"), format!("http://{b}"));
    let both = policy(&[&ra, &rb]);
    let secret = HeaderName::from_static("x-api-key");
    let mut req = get(format!("http://{a}/to?http://{b}/hello"));
    req.headers
        .push((secret.clone(), HeaderValue::from_static("s3cr3t")));
    req.headers.push((
        HeaderName::from_static("authorization"),
        HeaderValue::from_static("Bearer t"),
    ));
    req.headers.push((
        HeaderName::from_static("x-plain"),
        HeaderValue::from_static("kept"),
    ));
    req.secret_headers.push(secret.clone());
    let r = c.send(req.clone(), &both).await.unwrap();
    assert_eq!(
        (r.status, r.redirects, &r.body[..]),
        (200, 1, &b"hello"[..])
    );
    let header = |s: &TestServer, name: &str| {
        s.seen().last().and_then(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    };
    assert_eq!(header(&sa, "x-api-key").as_deref(), Some("s3cr3t"));
    assert_eq!(header(&sb, "x-plain").as_deref(), Some("kept"));
    assert_eq!(header(&sb, "x-api-key"), None);
    assert_eq!(header(&sb, "authorization"), None);
    // The same origin keeps them.
    req.url = format!("http://{a}/to?/hello");
    assert_eq!(c.send(req.clone(), &both).await.unwrap().status, 200);
    assert_eq!(header(&sa, "x-api-key").as_deref(), Some("s3cr3t"));

    // A redirect out of the rules, to a private address, or one hop too many.
    let only_a = policy(&[&ra]);
    let e = c
        .send(get(format!("http://{a}/to?http://{b}/hello")), &only_a)
        .await;
    assert!(matches!(e, Err(Denied::HostNotAllowed(_))), "{e:?}");
    let e = c
        .send(
            get(format!("http://{a}/to?http://169.254.169.254/")),
            &policy(&[&ra, "http://169.254.169.254:*"]),
        )
        .await;
    assert!(matches!(e, Err(Denied::PrivateAddress(_))), "{e:?}");
    let mut url = format!("http://{a}/hello");
    for _ in 0..6 {
        url = format!("http://{a}/to?{url}");
    }
    let e = c.send(get(url), &only_a).await;
    assert!(
        matches!(e, Err(Denied::Limit(ref m)) if m.contains("redirects")),
        "{e:?}"
    );
}

#[tokio::test]
async fn caps_and_timeouts_end_a_request_with_a_clear_error() {
    let a = serve(None).await;
    let exact = format!("http://{a}");
    let c = client(
        EgressLimits {
            total_timeout: Duration::from_millis(600),
            max_response_bytes: 1 << 20,
            max_request_bytes: 1000,
            ..EgressLimits::default()
        },
        &[],
    );
    let p = policy(&[&exact]);
    let e = c.send(get(format!("http://{a}/big")), &p).await;
    assert!(
        matches!(e, Err(Denied::Limit(ref m)) if m.contains("response")),
        "{e:?}"
    );
    let t = std::time::Instant::now();
    let e = c.send(get(format!("http://{a}/forever")), &p).await;
    assert!(matches!(e, Err(Denied::Timeout(_))), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    let mut big = get(format!("http://{a}/hello"));
    big.method = Method::POST;
    big.body = Bytes::from(vec![0u8; 1001]);
    let e = c.send(big, &p).await;
    assert!(
        matches!(e, Err(Denied::Limit(ref m)) if m.contains("request")),
        "{e:?}"
    );
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = c
        .send(
            get(format!("http://{closed}/")),
            &policy(&[&format!("http://{closed}")]),
        )
        .await;
    assert!(matches!(e, Err(Denied::Connect(_))), "{e:?}");
}

#[tokio::test]
async fn https_trusts_the_extra_ca_and_nothing_else() {
    let (cfg, ca, _) = tls_for_localhost().unwrap();
    let a = serve(Some(cfg)).await;
    let p = policy(&[&format!("https://{a}")]);
    let trusting = client(EgressLimits::default(), &[ca]);
    let r = trusting
        .send(get(format!("https://{a}/hello")), &p)
        .await
        .unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    let plain = client(EgressLimits::default(), &[]);
    let e = plain.send(get(format!("https://{a}/hello")), &p).await;
    assert!(matches!(e, Err(Denied::Tls(_))), "{e:?}");
    // http:// to the same port is another rule.
    let e = trusting.send(get(format!("http://{a}/hello")), &p).await;
    assert!(matches!(e, Err(Denied::HostNotAllowed(_))), "{e:?}");
}
