//! Sends one guest request under a policy: parse, check the destination against the
//! rules, resolve, check the resolved address, connect to that address (so DNS cannot
//! change it after the check), TLS with the Mozilla roots (and the configured extra
//! ones), HTTP/1.1, a capped body read under one deadline, and redirects followed only
//! to destinations the same checks allow.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::addr::private_kind;
use crate::{Denied, EgressLimits};
use solo_types::egress::{Host, Rule, Scheme};

/// A request as a guest made it, with secrets already substituted by the caller.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Headers whose values came from the vault: sent only to the first destination's
    /// origin, dropped when a redirect leaves it.
    pub secret_headers: Vec<HeaderName>,
}

/// What came back, after any redirects.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The last destination, `scheme://host:port`.
    pub destination: String,
    /// The URL that answered.
    pub url: String,
    pub redirects: u8,
}

/// The rules a request must pass: the tenant's (set by the admin) and the service's
/// (its deploy spec, inside the tenant's). Both must allow a destination.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub tenant: Arc<[Rule]>,
    pub service: Arc<[Rule]>,
}

impl Policy {
    /// Whether both lists allow `scheme://host:port`.
    pub fn allows(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        self.service.iter().any(|r| r.allows(scheme, host, port))
            && self.tenant.iter().any(|r| r.allows(scheme, host, port))
    }

    /// A private address passes only if the service names it exactly (and the tenant
    /// allows it).
    fn private_ok(&self, scheme: Scheme, ip: IpAddr, port: u16) -> bool {
        self.service
            .iter()
            .any(|r| r.scheme == scheme && r.names_exactly(ip, port))
            && self
                .tenant
                .iter()
                .any(|r| r.allows(scheme, &Host::Ip(ip), port))
    }
}

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

/// Parses an absolute `http(s)` URL into its destination and the path to request.
pub fn parse_url(text: &str) -> Result<(Destination, url::Url), Denied> {
    let u = url::Url::parse(text)
        .map_err(|e| Denied::BadRequest(format!("url {:?}: {e}", clip(text))))?;
    let scheme = Scheme::parse(u.scheme()).ok_or_else(|| {
        Denied::BadRequest(format!(
            "scheme {:?}: only http and https",
            clip(u.scheme())
        ))
    })?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(Denied::BadRequest(
            "a url with a user name or password: put credentials in a header".into(),
        ));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => Host::parse(d).map_err(Denied::BadRequest)?,
        Some(url::Host::Ipv4(a)) => Host::Ip(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Host::Ip(IpAddr::V6(a)),
        None => {
            return Err(Denied::BadRequest(format!(
                "url {:?} has no host",
                clip(text)
            )));
        }
    };
    let port = u.port().unwrap_or(scheme.default_port());
    Ok((Destination { scheme, host, port }, u))
}

/// The client: TLS settings and limits, shared by every request.
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    limits: EgressLimits,
    lookups: tokio::sync::Semaphore,
}

impl Client {
    /// A client trusting the Mozilla root set and `extra_roots`.
    pub fn new(
        limits: EgressLimits,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for c in extra_roots {
            roots
                .add(c.clone())
                .map_err(|e| format!("an extra CA certificate: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            limits,
            lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
        })
    }

    pub fn limits(&self) -> &EgressLimits {
        &self.limits
    }

    /// Sends `req` under `policy`, following up to `max_redirects` redirects, each
    /// checked like the first request; all within the total timeout.
    pub async fn send(&self, req: Request, policy: &Policy) -> Result<Response, Denied> {
        let deadline = Instant::now() + self.limits.total_timeout;
        if req.body.len() > self.limits.max_request_bytes {
            return Err(Denied::Limit(format!(
                "the request body is {} bytes, over the {}-byte cap",
                req.body.len(),
                self.limits.max_request_bytes
            )));
        }
        let (mut dest, mut url) = parse_url(&req.url)?;
        let first = dest.clone();
        let (mut method, mut body, mut headers) = (req.method, req.body, req.headers);
        let mut redirects = 0u8;
        loop {
            let hop = tokio::time::timeout_at(
                deadline.into(),
                self.once(&dest, &url, &method, &headers, body.clone(), policy),
            )
            .await
            .map_err(|_| {
                Denied::Timeout(format!(
                    "no complete answer within {:?}",
                    self.limits.total_timeout
                ))
            })??;
            let (status, resp_headers, resp_body) = hop;
            let location = resp_headers
                .iter()
                .find(|(k, _)| k == hyper::header::LOCATION)
                .and_then(|(_, v)| v.to_str().ok())
                .map(str::to_string);
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let (true, Some(location)) = (redirect, location) else {
                return Ok(Response {
                    status: status.as_u16(),
                    headers: resp_headers,
                    body: resp_body,
                    destination: dest.to_string(),
                    url: url.to_string(),
                    redirects,
                });
            };
            if redirects >= self.limits.max_redirects {
                return Err(Denied::Limit(format!(
                    "more than {} redirects",
                    self.limits.max_redirects
                )));
            }
            redirects += 1;
            let next = url.join(&location).map_err(|e| {
                Denied::BadRequest(format!("redirect to {:?}: {e}", clip(&location)))
            })?;
            (dest, url) = parse_url(next.as_str())?;
            let code = status.as_u16();
            if (code == 303 && method != Method::HEAD)
                || (matches!(code, 301 | 302) && method == Method::POST)
            {
                // As the Fetch standard says: 303 (and a POST's 301 or 302) becomes a GET
                // without a body.
                method = Method::GET;
                body = Bytes::new();
                headers.retain(|(k, _)| {
                    k != hyper::header::CONTENT_TYPE && k != hyper::header::CONTENT_LENGTH
                });
            }
            if dest.scheme != first.scheme || dest.host != first.host || dest.port != first.port {
                headers.retain(|(k, _)| {
                    !req.secret_headers.contains(k)
                        && k != hyper::header::AUTHORIZATION
                        && k != hyper::header::COOKIE
                        && k != hyper::header::PROXY_AUTHORIZATION
                });
            }
        }
    }

    /// One request to one destination: check, resolve, check, connect, send, read.
    async fn once(
        &self,
        dest: &Destination,
        url: &url::Url,
        method: &Method,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        policy: &Policy,
    ) -> Result<(StatusCode, Vec<(HeaderName, HeaderValue)>, Bytes), Denied> {
        if !policy.allows(dest.scheme, &dest.host, dest.port) {
            return Err(Denied::HostNotAllowed(dest.to_string()));
        }
        let addrs = self.resolve(dest, policy).await?;
        let tcp = self.connect(dest, &addrs).await?;
        let _ = tcp.set_nodelay(true);
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            });
        let host_header = if dest.port == dest.scheme.default_port() {
            dest.host.to_string()
        } else {
            format!("{}:{}", dest.host, dest.port)
        };
        request = request.header(hyper::header::HOST, host_header);
        for (k, v) in headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
            request = request.header(k, v);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Denied::BadRequest(format!("the request: {e}")))?;
        let resp = match dest.scheme {
            Scheme::Http => exchange(tcp, request).await?,
            Scheme::Https => {
                let name = match &dest.host {
                    Host::Name(n) => ServerName::try_from(n.clone())
                        .map_err(|e| Denied::BadRequest(format!("host {n:?}: {e}")))?,
                    Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                };
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Denied::Tls(format!("{dest}: {e}")))?;
                exchange(tls, request).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let cap = self.limits.max_response_bytes;
        if parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > cap as u64)
        {
            return Err(Denied::Limit(format!(
                "the response body is over the {cap}-byte cap"
            )));
        }
        let body = Limited::new(body, cap)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Denied::Limit(format!("the response body is over the {cap}-byte cap"))
                } else {
                    Denied::Connect(format!("{dest}: reading the response: {e}"))
                }
            })?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((parts.status, headers, body))
    }

    /// The addresses to try: an IP literal, or those the name resolves to that pass
    /// (public, or named exactly by a rule). Lookups run on blocking threads that a
    /// timeout cannot stop, so at most [`MAX_LOOKUPS`] run at once.
    async fn resolve(
        &self,
        dest: &Destination,
        policy: &Policy,
    ) -> Result<Vec<SocketAddr>, Denied> {
        let addrs: Vec<IpAddr> = match &dest.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(n) => {
                let slow = || Denied::Timeout(format!("resolving {n} took too long"));
                let lookup = async {
                    let _turn = self.lookups.acquire().await.map_err(|_| slow())?;
                    tokio::net::lookup_host((n.as_str(), dest.port))
                        .await
                        .map_err(|e| Denied::Connect(format!("resolving {n}: {e}")))
                };
                tokio::time::timeout(self.limits.connect_timeout, lookup)
                    .await
                    .map_err(|_| slow())??
                    .map(|a| a.ip())
                    .collect()
            }
        };
        let mut refused = None;
        let mut ok = Vec::new();
        for ip in addrs {
            match private_kind(ip) {
                Some(kind) if crate::addr::never(ip) => refused = refused.or(Some(kind)),
                None => ok.push(SocketAddr::new(ip, dest.port)),
                Some(_) if policy.private_ok(dest.scheme, ip, dest.port) => {
                    ok.push(SocketAddr::new(ip, dest.port));
                }
                Some(kind) => refused = refused.or(Some(kind)),
            }
        }
        match (ok.is_empty(), refused) {
            (false, _) => Ok(ok),
            // The guest learns the kind, not the address: it may not map private DNS.
            (true, Some(kind)) => Err(Denied::PrivateAddress(format!(
                "{dest} is a {kind} address; only a rule naming that exact address and port reaches it"
            ))),
            (true, None) => Err(Denied::Connect(format!(
                "{dest}: the name resolves to no address"
            ))),
        }
    }

    /// Connects to the first of `addrs` that answers, within the connect timeout.
    async fn connect(&self, dest: &Destination, addrs: &[SocketAddr]) -> Result<TcpStream, Denied> {
        let attempt = async {
            let mut last = None;
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(tcp) => return Ok(tcp),
                    Err(e) => last = Some(e),
                }
            }
            Err(Denied::Connect(format!(
                "{dest}: {}",
                last.map_or_else(|| "no address".to_string(), |e| e.to_string())
            )))
        };
        tokio::time::timeout(self.limits.connect_timeout, attempt)
            .await
            .map_err(|_| {
                Denied::Timeout(format!(
                    "connecting to {dest} took over {:?}",
                    self.limits.connect_timeout
                ))
            })?
    }
}

/// Name lookups in flight at once, at most (each holds a blocking thread).
pub const MAX_LOOKUPS: usize = 64;

/// `text` cut to 200 characters, for messages that echo what a guest or a server sent.
pub(crate) fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Headers the client sets itself (the framing, the host) or that concern one hop only:
/// a guest's are dropped.
fn hop_by_hop(name: &HeaderName) -> bool {
    use hyper::header as h;
    [
        h::HOST,
        h::CONNECTION,
        h::CONTENT_LENGTH,
        h::TRANSFER_ENCODING,
        h::TE,
        h::TRAILER,
        h::UPGRADE,
        h::PROXY_AUTHORIZATION,
        h::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange<S>(
    io: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, Denied>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Denied::Connect(format!("http handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.send_request(request)
        .await
        .map_err(|e| Denied::Connect(format!("the exchange: {e}")))
}
