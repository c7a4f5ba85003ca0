//! The bus: publish an [`Event`] to a [`Topic`], and receive the events of the
//! topics this process subscribed to. It maps onto Redis `PUBLISH` / `SUBSCRIBE` /
//! `UNSUBSCRIBE`.
//!
//! A bus is built with the process's [`crate::Hub`] and hands every event it
//! receives from *other* processes to [`crate::Hub::dispatch`]; what a process
//! publishes reaches its own peers without the bus ([`crate::Room`] dispatches
//! it locally first). Subscriptions are counted per topic: the
//! first `subscribe` of a topic subscribes the process, the last `unsubscribe`
//! unsubscribes it. Events from one publisher arrive in the order published.

use std::future::Future;

use switchboard_telemetry::Origin;

use crate::error::BackendError;
use crate::event::{Event, Topic};

pub mod memory;
pub mod redis;
mod subscriptions;

/// Publish/subscribe between every process serving the same rooms.
pub trait Bus: Send + Sync + 'static {
    /// Proves the whole path works: an event published now comes back through
    /// this process's subscription (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Starts receiving the events of `topic`; resolves once they flow.
    fn subscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Stops receiving `topic` (once every subscriber of this process has left it).
    fn unsubscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Sends `event` to every *other* process subscribed to `topic` (this
    /// process has delivered it to its own peers already). It carries
    /// `origin` to the receivers.
    fn publish(
        &self,
        topic: &Topic,
        event: Event,
        origin: &Origin,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
