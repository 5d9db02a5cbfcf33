//! The sandbox's errors: why code was refused, why an instance could not start, and
//! how a message failed.

use std::fmt;
use std::path::PathBuf;

use solo_types::Code;

/// The sandbox itself could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("configure the WebAssembly engine: {0}")]
    Engine(String),
    #[error("create the artifact cache directory {path}: {detail}")]
    CacheDir { path: PathBuf, detail: String },
}

/// Code that cannot become an artifact. Each variant names the cause, for the agent that
/// wrote the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the code is empty")]
    Empty,
    #[error("the code is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "this is a core WebAssembly module, not a component; build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid WebAssembly: {0}")]
    InvalidWasm(String),
    #[error(
        "the component imports {name:?}, which Solo does not provide; allowed: \
         solo:service/host and wasi:* 0.2 interfaces"
    )]
    ForbiddenImport { name: String },
    #[error("the component does not export {name}; every service must export {needed}")]
    MissingExport { name: String, needed: String },
    #[error("the component cannot be linked: {0}")]
    Link(String),
    #[error("JavaScript syntax error at line {line}, column {column}: {message}")]
    JsSyntax {
        message: String,
        line: u32,
        column: u32,
    },
    #[error("the JavaScript module does not export {name}; every service must export {needed}")]
    JsMissingExport { name: String, needed: String },
    #[error("the JavaScript module failed while loading: {0}")]
    JsLoad(String),
    /// Checking a JavaScript module takes an instance slot, and none was free.
    #[error("no instance slot is free to check the module: {0}")]
    Exhausted(String),
    #[error("internal error while compiling: {0}")]
    Internal(String),
}

impl CompileError {
    pub fn code(&self) -> Code {
        match self {
            CompileError::Internal(_) => Code::Internal,
            CompileError::Exhausted(_) => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        }
    }
}

/// An instance could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantiateError {
    #[error("{what} limit {requested} is over the sandbox's maximum of {max}")]
    LimitTooHigh {
        what: &'static str,
        requested: u64,
        max: u64,
    },
    #[error("no instance slot is free: {0}")]
    Exhausted(String),
    #[error("the module failed while loading: {0}")]
    Crashed(Crash),
    #[error("internal error while instantiating: {0}")]
    Internal(String),
}

impl InstantiateError {
    pub fn code(&self) -> Code {
        match self {
            InstantiateError::LimitTooHigh { .. } => Code::InvalidArgument,
            InstantiateError::Exhausted(_) => Code::ResourceExhausted,
            InstantiateError::Crashed(_) => Code::FailedPrecondition,
            InstantiateError::Internal(_) => Code::Internal,
        }
    }
}

/// What kind of crash ended an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashKind {
    /// The guest trapped (a Rust panic, `unreachable`, an out-of-bounds access) or, in
    /// JavaScript, threw where nobody can receive the error.
    Trap,
    /// The message used more CPU time than `cpu_per_message`.
    CpuLimit,
    /// The guest tried to use more memory than `memory_bytes`.
    MemoryLimit,
    /// The guest's stack overflowed (unbounded recursion).
    StackOverflow,
    /// The guest returned a reply the host cannot read (not UTF-8).
    InvalidReply,
    /// The instance crashed before and cannot run again.
    Poisoned,
    /// Its owner interrupted it (a forced kill).
    Interrupted,
    /// The message was not answered within its wall-clock deadline (a reply that never
    /// settles, a guest blocked forever); its owner drops the instance.
    Timeout,
    /// The host failed while running the guest.
    Internal,
}

impl CrashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CrashKind::Trap => "trap",
            CrashKind::CpuLimit => "cpu_limit",
            CrashKind::MemoryLimit => "memory_limit",
            CrashKind::StackOverflow => "stack_overflow",
            CrashKind::InvalidReply => "invalid_reply",
            CrashKind::Poisoned => "poisoned",
            CrashKind::Interrupted => "interrupted",
            CrashKind::Timeout => "timeout",
            CrashKind::Internal => "internal",
        }
    }
}

impl fmt::Display for CrashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A crash: the instance is dead. Written so an agent can fix its code from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    pub kind: CrashKind,
    pub message: String,
    /// The guest's stack at the crash (function names), where available.
    pub backtrace: Option<String>,
    /// For a limit crash, what the guest used or asked for where the sandbox knows it:
    /// milliseconds of CPU (`CpuLimit`), bytes of memory (`MemoryLimit`).
    pub observed: Option<u64>,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// An error the guest's own code raised (a JavaScript exception, a component's `err`
/// answer): the instance is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    /// What the guest said, followed by where in its code when the engine knows (a
    /// JavaScript exception: `(at line L, column C)`).
    pub message: String,
    /// The guest's stack where it raised the error, where available.
    pub stack: Option<String>,
}

impl GuestError {
    /// An error from the guest (or answered on its behalf) with no stack.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            stack: None,
        }
    }

    /// An error thrown by JavaScript: its message with the line and column of the
    /// innermost frame in the service's code, and the stack.
    pub(crate) fn thrown(message: String, stack: Option<String>) -> Self {
        let message = match stack.as_deref().and_then(service_location) {
            Some((line, column)) => format!("{message} (at line {line}, column {column})"),
            None => message,
        };
        Self { message, stack }
    }
}

/// The line and column of the first frame of a JavaScript stack that is in the
/// service's own module (`at f (service:3:50)`).
fn service_location(stack: &str) -> Option<(u32, u32)> {
    stack.lines().find_map(|frame| {
        let at = frame.find("service:")? + "service:".len();
        let mut parts = frame[at..].split(|c: char| !c.is_ascii_digit());
        let line = parts.next()?.parse().ok()?;
        let column = parts.next()?.parse().ok()?;
        Some((line, column))
    })
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a message to an instance failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest answered with an error; the instance is healthy.
    #[error("the service returned an error: {0}")]
    Guest(GuestError),
    /// The instance crashed; it is poisoned and must be replaced.
    #[error("the service crashed: {0}")]
    Crash(Crash),
    /// The request cannot be given to the guest (for example, not JSON for JavaScript).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The reply is over the size limit; the instance is healthy.
    #[error("the reply is {size} bytes, over the limit of {limit}")]
    ReplyTooLarge { size: usize, limit: usize },
    /// The message could not run now: its owner had no instance to run it in (every
    /// slot of the pool busy). Nothing ran.
    #[error("{0}")]
    Unavailable(String),
}

impl CallError {
    pub(crate) fn crash(kind: CrashKind, message: impl Into<String>) -> Self {
        CallError::Crash(Crash {
            kind,
            message: message.into(),
            backtrace: None,
            observed: None,
        })
    }
}

#[cfg(test)]
mod guest_error_tests {
    use super::*;

    #[test]
    fn a_thrown_error_names_its_line_and_column_in_the_service() {
        let e = GuestError::thrown(
            "cannot read property 'y' of undefined".into(),
            Some("    at lookup (service:3:50)\n    at handleCall (service:7:10)\n".into()),
        );
        assert_eq!(
            e.message,
            "cannot read property 'y' of undefined (at line 3, column 50)"
        );
        let native = GuestError::thrown("x".into(), Some("    at <native>\n".into()));
        assert_eq!(native.message, "x");
        assert_eq!(GuestError::thrown("y".into(), None).message, "y");
    }
}
