//! The `switchboard` binary's library half: command line, logging, signals and
//! the ways to run the service. `main` only parses arguments and calls in here,
//! and tests start servers through the same functions.
//!
//! * [`cli`]: the command line (a contract: see `docs/OPERATIONS.md`).
//! * [`admin`]: the admin port (`/metrics`, `/livez`, `/readyz`) every role serves.
//! * [`probe`]: `switchboard probe`, a smoke-test call through a running edge.
//! * [`standalone`]: edge + room logic + in-memory store in one process.
//! * [`distributed`]: the room service (gRPC + Redis) and the stateless edge.
//! * [`logging`]: `tracing` set-up, text or JSON.
//! * [`signal`]: SIGTERM/SIGINT to a cancellation token.

pub mod admin;
pub mod cli;
pub mod distributed;
pub mod logging;
pub mod probe;
pub mod signal;
pub mod standalone;
