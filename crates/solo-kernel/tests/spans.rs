//! Every operation runs in a `solo_kernel.<operation>` span carrying the tenant and the
//! service, so whatever is logged inside it says whose request it was; no span carries a
//! payload.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use solo_kernel::{DeployRequest, Kernel, KernelConfig, KernelOptions, KillOptions};
use solo_types::Format;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use common::{sid, tenant};

/// A span as it was opened: its name and its fields.
#[derive(Debug, Clone)]
struct Opened {
    name: String,
    fields: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Opened>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Opened {
            name: attrs.metadata().name().to_string(),
            fields,
        });
    }
}

impl Recorder {
    fn find(&self, name: &str) -> Opened {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no span {name}"))
    }
}

fn field<'a>(s: &'a Opened, key: &str) -> &'a str {
    s.fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("span {} has no {key}: {:?}", s.name, s.fields))
}

#[tokio::test]
async fn deploy_call_and_kill_run_in_spans_with_the_tenant_and_the_service() {
    let recorder = Recorder::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let dir = tempfile::tempdir().unwrap();
    let k = Kernel::start(
        common::store(dir.path()),
        common::sandbox(10),
        KernelConfig::default(),
        KernelOptions::default(),
    )
    .await
    .unwrap();
    let a = tenant("alice");
    let code = solo_guests::js("echo").into_bytes();
    k.deploy(&a, DeployRequest::new(sid("echo"), Format::Js, code))
        .await
        .unwrap();
    let secret_request = r#"{"password":"hunter2"}"#;
    k.call(&a, &sid("echo"), secret_request, None)
        .await
        .unwrap();
    k.kill(&a, &sid("echo"), KillOptions::default())
        .await
        .unwrap();
    for op in ["deploy", "call", "kill"] {
        let s = recorder.find(&format!("solo_kernel.{op}"));
        assert_eq!(field(&s, "tenant"), "alice", "{op}");
        assert_eq!(field(&s, "service"), "echo", "{op}");
        assert!(
            !s.fields.iter().any(|(_, v)| v.contains("hunter2")),
            "{op}: a span carries a payload: {s:?}"
        );
    }
    k.shutdown().await;
}
