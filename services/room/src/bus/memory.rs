//! The in-process [`Bus`]: one process is the whole world, so publishing is
//! dispatching to the local hub, synchronously and in order, and subscriptions
//! need no bookkeeping (the hub already knows who is where).

use std::sync::Arc;

use switchboard_telemetry::Origin;

use super::Bus;
use crate::error::BackendError;
use crate::event::{Event, Topic};
use crate::hub::Hub;

/// Delivers every published event straight to the local [`Hub`].
#[derive(Debug, Clone)]
pub struct MemoryBus {
    hub: Arc<Hub>,
}

impl MemoryBus {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Bus for MemoryBus {
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn subscribe(&self, _topic: &Topic) -> Result<(), BackendError> {
        Ok(())
    }

    async fn unsubscribe(&self, _topic: &Topic) -> Result<(), BackendError> {
        Ok(())
    }

    async fn publish(
        &self,
        topic: &Topic,
        event: Event,
        origin: &Origin,
    ) -> Result<(), BackendError> {
        self.hub.dispatch(topic, &event, &origin.in_current_span());
        Ok(())
    }
}
