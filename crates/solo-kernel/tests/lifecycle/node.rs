//! The node a kernel runs on: a cluster node names itself in status, list, the tree and
//! health; an embedded server names none and its answers carry no `node` key.

use solo_kernel::{Caller, DeployRequest, Kernel, KernelConfig, KernelOptions, ListFilter};
use solo_types::{Format, TenantId};

use crate::common::{self, sid};
use crate::{alice, js, solo};

async fn deploy_counter(k: &Kernel) {
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Js, js("counter")),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_names_itself_in_status_list_and_tree() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kernel::start(
        common::store(dir.path()),
        common::sandbox(500),
        KernelConfig::default(),
        KernelOptions {
            node: Some("n2".into()),
            ..KernelOptions::default()
        },
    )
    .await
    .unwrap();
    deploy_counter(&k).await;
    let st = k.status(&alice(), &sid("c")).unwrap();
    assert_eq!(st.node.as_deref(), Some("n2"));
    let listed = k.list(&alice(), &ListFilter::default()).unwrap();
    assert_eq!(listed.services[0].node.as_deref(), Some("n2"));
    assert_eq!(k.tree(&alice()).unwrap().node.as_deref(), Some("n2"));
    assert_eq!(k.health(Some(&alice())).node.as_deref(), Some("n2"));
    // Without credentials, only whether it is up.
    assert_eq!(k.health(None).node, None);
    // The log says which node started.
    let admin = Caller::admin(TenantId::new("ops").unwrap());
    let started = common::events_of(&k, &admin, "system_started");
    assert_eq!(started[0].payload["node"], "n2");
    k.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_names_no_node() {
    let s = solo().await;
    deploy_counter(&s.kernel).await;
    let st = s.kernel.status(&alice(), &sid("c")).unwrap();
    assert_eq!(st.node, None);
    assert!(serde_json::to_value(&st).unwrap().get("node").is_none());
    let tree = s.kernel.tree(&alice()).unwrap();
    assert!(serde_json::to_value(&tree).unwrap().get("node").is_none());
}
