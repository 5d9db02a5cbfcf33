//! Erlang/OTP-style supervision for Solo's system components and tenants' services.
//!
//! [`policy`] is the restart decision as a pure function of (policy, history, now),
//! tested as a table on a fake clock; [`Supervisor`] runs children as tokio tasks and
//! applies the decision with a strategy (`one_for_one`, `rest_for_one`, `one_for_all`).

mod child;
pub mod policy;
mod runner;

pub use child::{
    ChildCtx, ChildInfo, ChildSpec, ChildState, Exit, StartFn, SupervisorError, SupervisorEvent,
    SupervisorExit, SupervisorSpec,
};
pub use policy::{
    Backoff, Decision, ExitKind, Intensity, RestartHistory, RestartType, Strategy, decide,
};
pub use runner::Supervisor;
