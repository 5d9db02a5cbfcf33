//! Routing by tenant: on a cluster whose nodes each serve the tenants placed on them, a
//! node serves the requests of its own tenants and forwards every other, one request at
//! a time, to the node serving its tenant (see `forward.rs` for how), deciding from what
//! the request claims (`auth::claim`) before anything reads it. The serving node
//! authenticates the request as if the client had come to it, so a false claim only
//! sends a request where it is refused. A request another node forwarded is served
//! where it arrives, never forwarded again.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use futures::future::BoxFuture;
use solo_types::api::Failure;

use crate::auth::{Claim, ConnInfo, claim};
use crate::forward::{Forwarding, Listener, Upstream};

/// Where a request on a listener goes by its claim: `None` to serve it here, else the
/// node to forward it to, or the refusal to answer it with. Asynchronous, so a tenant
/// placed nowhere yet can be placed before its first request is answered.
pub type Route = Arc<
    dyn Fn(Listener, Claim) -> BoxFuture<'static, Option<Result<Upstream, Failure>>> + Send + Sync,
>;

/// Routing by tenant: the decision, and the forwarding that carries it out.
#[derive(Clone)]
pub struct Routing {
    pub route: Route,
    pub forwarding: Arc<Forwarding>,
}

/// Marks a request that came over another node's connection: forwarded once already.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromNode;

/// `router` behind routing by tenant (unchanged without `routing`).
pub(crate) fn routed(router: Router, which: Listener, routing: Option<&Routing>) -> Router {
    let Some(r) = routing.cloned() else {
        return router;
    };
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let r = r.clone();
            async move {
                if req.extensions().get::<FromNode>().is_some() {
                    return next.run(req).await;
                }
                let conn = req.extensions().get::<Arc<ConnInfo>>().cloned();
                match (r.route)(which, claim(conn.as_deref(), req.headers())).await {
                    None => next.run(req).await,
                    Some(up) => r.forwarding.forward_to(req, up).await,
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::forward::wire::{files_and_node, request, serving, text, to};
    use solo_types::Code;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_request_is_served_here_or_forwarded_by_its_tenant() {
        let (_d, files, node) = files_and_node();
        let up = serving(&files).await;
        let addr = up.addr.clone();
        let route: Route = Arc::new(move |which, claim| {
            let decided = match claim {
                Claim::Tenant(t) if t.as_str() == "bob" => {
                    assert_eq!(which, Listener::Http);
                    Some(Ok(Upstream {
                        node: "b".into(),
                        addr: addr.clone(),
                        unreachable: Failure::new(Code::Unavailable, "owner_lost", "b is away"),
                    }))
                }
                Claim::Tenant(t) if t.as_str() == "carol" => Some(Err(Failure::new(
                    Code::Unavailable,
                    "not_placed",
                    "carol is nowhere yet",
                ))),
                _ => None,
            };
            Box::pin(async move { decided })
        });
        let routing = Routing {
            route,
            forwarding: Arc::new(
                Forwarding::new(&files, (&node.0, &node.1), to("127.0.0.1:1")).unwrap(),
            ),
        };
        let here = Router::new().fallback(|| async { "here" });
        let router = routed(here, Listener::Http, Some(&routing));
        let as_tenant = |who: &str, from_node: bool| {
            let mut req = request("/", false);
            req.extensions_mut().insert(Arc::new(ConnInfo {
                peer: Some(crate::tls::PeerIdentity {
                    common_name: who.into(),
                    admin: false,
                    node: false,
                }),
                remote: "127.0.0.1:9".parse().unwrap(),
            }));
            if from_node {
                req.extensions_mut().insert(FromNode);
            }
            req
        };
        let answer = |req| {
            let router = router.clone();
            async move { router.oneshot(req).await.unwrap() }
        };
        // Alice is served here; bob's request reaches b, naming bob.
        assert_eq!(text(answer(as_tenant("alice", false)).await).await, "here");
        let r = answer(as_tenant("bob", false)).await;
        assert_eq!(text(r).await, "tenant bob");
        assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Carol is refused with the route's failure, nothing sent.
        let r = answer(as_tenant("carol", false)).await;
        assert_eq!(r.status(), 503);
        assert!(text(r).await.contains("not_placed"));
        // Bob's request that another node forwarded here is served here.
        assert_eq!(text(answer(as_tenant("bob", true)).await).await, "here");
        assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
