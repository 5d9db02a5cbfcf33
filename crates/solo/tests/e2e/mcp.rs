//! The MCP face, driven by a client nobody on this project wrote: the official MCP Python
//! SDK (`mcp` on PyPI, pinned in `tests/mcp/requirements.txt`, installed by
//! `tests/mcp/sdk.sh`), running the scenarios of `tests/mcp/agent.py` over stdio
//! (`solo mcp`) and over Streamable HTTP (`/mcp`). A server that stops under `solo mcp`
//! is checked here directly.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{SOLO, Server, wait_child, workspace_root};

fn mcp_dir() -> PathBuf {
    workspace_root().join("crates/solo/tests/mcp")
}

/// The virtual environment's python, created once per test run.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-venv");
        let out = Command::new("bash")
            .arg(mcp_dir().join("sdk.sh"))
            .arg(&venv)
            .output()
            .expect("run sdk.sh");
        assert!(
            out.status.success(),
            "installing the MCP Python SDK failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs one scenario of agent.py and fails with its report.
pub(crate) fn agent(scenario: &str, env: &[(&str, String)]) {
    let mut cmd = Command::new(python());
    cmd.arg(mcp_dir().join("agent.py"))
        .arg(scenario)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(mcp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run agent.py");
    assert!(
        out.status.success(),
        "scenario {scenario} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

fn example(name: &str) -> String {
    path(workspace_root().join("examples/js").join(name))
}

/// The HTTP scenarios' environment: the URL, the CA, alice's and bob's certificates.
fn http_env(s: &Server) -> Vec<(&'static str, String)> {
    http_env_at(s, &s.http.to_string())
}

/// The same, with certificates issued by `s`'s CA, for the HTTPS listener at `http`.
pub(crate) fn http_env_at(s: &Server, http: &str) -> Vec<(&'static str, String)> {
    let (alice_cert, alice_key) = s.issue("alice", false);
    let (bob_cert, bob_key) = s.issue("bob", false);
    vec![
        ("MCP_URL", format!("https://{http}/mcp")),
        ("SOLO_CA", path(s.ca())),
        ("ALICE_CERT", path(alice_cert)),
        ("ALICE_KEY", path(alice_key)),
        ("BOB_CERT", path(bob_cert)),
        ("BOB_KEY", path(bob_key)),
    ]
}

#[test]
fn an_agent_drives_solo_over_stdio_with_the_python_sdk() {
    let s = Server::start();
    let (cert, key) = s.issue("alice", false);
    agent(
        "stdio",
        &[
            ("SOLO_BIN", SOLO.to_string()),
            ("SOLO_DATA_DIR", path(s.data_dir())),
            ("SOLO_CERT", path(cert)),
            ("SOLO_KEY", path(key)),
            ("COUNTER_JS", example("counter.js")),
            ("CRASHER_JS", example("crasher.js")),
        ],
    );
}

#[test]
fn over_http_two_tenants_see_only_their_own_tools_and_services() {
    let s = Server::start();
    agent("http_tenants", &http_env(&s));
}

#[test]
fn over_http_a_token_calls_only_what_it_names_and_each_denial_is_an_event() {
    let s = Server::start();
    agent("http_token", &http_env(&s));
}

#[test]
fn over_http_bad_requests_are_refused_and_the_session_goes_on() {
    let limit = 256 * 1024;
    let s = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[("SOLO_MAX_REQUEST_BYTES", &limit.to_string())],
    );
    let mut env = http_env(&s);
    env.push(("MAX_REQUEST_BYTES", limit.to_string()));
    agent("http_bad_input", &env);
}

/// `solo mcp` as an agent's host starts it: through the data directory.
fn solo_mcp(data_dir: &Path) -> std::process::Child {
    Command::new(SOLO)
        .arg("mcp")
        .env_clear()
        .env("SOLO_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start solo mcp")
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    wait_child(child, within).unwrap_or_else(|| panic!("solo mcp did not exit within {within:?}"))
}

#[test]
fn solo_mcp_reports_a_server_that_stops_and_exits_non_zero() {
    let mut s = Server::start();
    let mut child = solo_mcp(&s.data_dir());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    writeln!(stdin, "{init}").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["result"]["serverInfo"]["name"], "solo", "{line}");

    s.kill9();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success(), "{status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("stopped answering"), "{err}");
    drop(stdin);

    // With no server at all, it says so at once instead of serving a dead session.
    let mut child = solo_mcp(&s.data_dir());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("is not running"), "{err}");
}
