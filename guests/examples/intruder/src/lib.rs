//! intruder: tries every door a sandboxed service must not have (files, the environment,
//! the network, processes, `/proc`) and answers what each attempt got, so a test can
//! show that each one fails with a clear error. Any request does.

use serde_json::{Map, Value, json};

struct Intruder;

/// What one attempt got: `"denied: ..."` for an error, `"OPEN: ..."` if it worked.
fn attempt<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(v) => json!(format!("OPEN: {v:?}")),
        Err(e) => json!(format!("denied: {e}")),
    }
}

impl solo_sdk::Service for Intruder {
    fn handle_call(_request: String) -> Result<String, String> {
        let mut doors = Map::new();
        doors.insert(
            "read /etc/passwd".into(),
            attempt(std::fs::read_to_string("/etc/passwd")),
        );
        doors.insert(
            "list /".into(),
            attempt(std::fs::read_dir("/").map(|d| d.count())),
        );
        doors.insert(
            "list .".into(),
            attempt(std::fs::read_dir(".").map(|d| d.count())),
        );
        doors.insert(
            "write /tmp/x".into(),
            attempt(std::fs::write("/tmp/x", b"x")),
        );
        doors.insert(
            "read /proc/self/environ".into(),
            attempt(std::fs::read("/proc/self/environ")),
        );
        let vars: Vec<(String, String)> = std::env::vars().collect();
        doors.insert(
            "environment".into(),
            if vars.is_empty() {
                json!("denied: empty")
            } else {
                json!(format!("OPEN: {} variables", vars.len()))
            },
        );
        doors.insert(
            "arguments".into(),
            match std::env::args().count() {
                0 => json!("denied: none"),
                n => json!(format!("OPEN: {n} arguments")),
            },
        );
        doors.insert(
            "tcp connect 127.0.0.1:22".into(),
            attempt(std::net::TcpStream::connect("127.0.0.1:22")),
        );
        doors.insert(
            "tcp connect 1.1.1.1:443".into(),
            attempt(std::net::TcpStream::connect("1.1.1.1:443")),
        );
        doors.insert(
            "tcp listen".into(),
            attempt(std::net::TcpListener::bind("0.0.0.0:8080")),
        );
        doors.insert(
            "udp bind".into(),
            attempt(std::net::UdpSocket::bind("0.0.0.0:0")),
        );
        doors.insert(
            "resolve example.com".into(),
            attempt(std::net::ToSocketAddrs::to_socket_addrs("example.com:443").map(|a| a.count())),
        );
        doors.insert(
            "spawn sh".into(),
            attempt(
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg("id")
                    .output(),
            ),
        );
        Ok(Value::Object(doors).to_string())
    }
}

solo_sdk::service!(Intruder);
