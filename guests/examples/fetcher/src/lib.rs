//! fetcher: sends the HTTP request it is asked for with `wstd` (an ordinary Rust HTTP
//! client for WASI, over `wasi:http/outgoing-handler`) and replies with the status and
//! the body. A request is `{"url", "method"?, "headers"?: {name: value}, "body"?}`; the
//! reply `{"status", "body"}`, or the client's error as the call's error. With
//! `{"urls": [...]}` it sends GETs to all of them at once and replies with one result
//! each (`{"status", "body"}` or `{"error"}`).

use serde_json::{Value, json};
use wstd::http::{Body, Client, Request};

struct Fetcher;

async fn fetch(r: Value) -> Result<Value, String> {
    let url = r["url"].as_str().ok_or("a request needs a url")?;
    let method = r["method"].as_str().unwrap_or("GET");
    let mut req = Request::builder().method(method).uri(url);
    if let Some(h) = r["headers"].as_object() {
        for (k, v) in h {
            req = req.header(k.as_str(), v.as_str().unwrap_or_default());
        }
    }
    let body = r["body"].as_str().unwrap_or_default().to_string();
    let req = req
        .body(Body::from(body))
        .map_err(|e| format!("the request: {e}"))?;
    let resp = Client::new()
        .send(req)
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .bytes_contents()
        .await
        .map_err(|e| format!("read the body: {e:?}"))?;
    Ok(json!({ "status": status, "body": String::from_utf8_lossy(&bytes) }))
}

/// GETs every url at once.
async fn fetch_all(urls: Vec<Value>) -> Value {
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| wstd::runtime::spawn(fetch(json!({ "url": url }))))
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap_or_else(|e| json!({ "error": e })));
    }
    json!({ "results": results })
}

impl solo_sdk::Service for Fetcher {
    fn handle_call(request: String) -> Result<String, String> {
        let r: Value = serde_json::from_str(&request).map_err(|e| e.to_string())?;
        if let Some(urls) = r["urls"].as_array() {
            return Ok(wstd::runtime::block_on(fetch_all(urls.clone())).to_string());
        }
        wstd::runtime::block_on(fetch(r)).map(|v| v.to_string())
    }
}

solo_sdk::service!(Fetcher);
