//! The dispatcher's side of the state shared by gateway replicas: it hands the sync
//! task this replica's counts and gives each pool's scheduler the others' (see `shared`).

use super::Dispatcher;
use crate::shared::FleetMsg;
use std::sync::Arc;

impl Dispatcher {
    pub(super) fn fleet(&mut self, msg: FleetMsg) {
        match msg {
            FleetMsg::Counts(reply) => {
                let demand = self
                    .pools
                    .values_mut()
                    .flat_map(|p| p.scheduler.fleet_demand())
                    .collect();
                let _ = reply.send(demand);
            }
            FleetMsg::Apply(view) => {
                let now = self.clock.now();
                let share = |id: &inferplane_core::InstanceId| {
                    view.shares.get(id).copied().unwrap_or_default()
                };
                let models: Vec<Arc<str>> = self.pools.keys().cloned().collect();
                for model in &models {
                    if let Some(pool) = self.pools.get_mut(model) {
                        pool.scheduler.set_fleet(&share, now);
                    }
                    // room may have opened (the others finished) or closed
                    self.poll(model);
                }
            }
        }
    }
}
