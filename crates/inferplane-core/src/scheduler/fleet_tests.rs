//! The scheduler with fleet-wide counts (`Scheduler::set_fleet`, `fleet_demand`): what
//! other gateway replicas have in flight counts against each instance's limit and load,
//! this replica keeps within its reservation, and is a single gateway again once the
//! counts go.

use super::tests::{H, meta, ms};
use crate::fleet::FleetShare;
use crate::instance::InstanceId;

#[test]
fn the_others_in_flight_and_the_reservation_bound_what_this_replica_places() {
    let mut h = H::fifo(&[4]);
    let id = InstanceId::new("i0");
    // another replica has 3 of the 4 in flight and this one reserved 1
    let tight = FleetShare {
        others: 3,
        cap: Some(1),
    };
    h.s.set_fleet(
        &|i| {
            if *i == id {
                tight
            } else {
                FleetShare::default()
            }
        },
        ms(0),
    );
    for n in 0..5 {
        h.submit(meta(n, ms(1)), ms(1));
    }
    assert_eq!(h.poll(ms(1)), vec![0], "one place left by the fleet");
    // the other replica's requests finished and this one reserved 3
    let wide = FleetShare {
        others: 0,
        cap: Some(3),
    };
    h.s.set_fleet(&|_| wide, ms(2));
    assert_eq!(h.poll(ms(2)), vec![1, 2], "up to the reservation");
    // alone again: the whole limit
    h.s.set_fleet(&|_| FleetShare::default(), ms(3));
    assert_eq!(h.poll(ms(3)), vec![3]);
}

#[test]
fn demand_says_in_flight_limit_and_whether_more_is_wanted() {
    let mut h = H::fifo(&[4, 4]);
    let d = h.s.fleet_demand();
    assert!(
        d.iter()
            .all(|d| !d.wants && d.inflight == 0 && d.limit == 4),
        "{d:?}"
    );
    h.submit(meta(0, ms(1)), ms(1));
    h.poll(ms(1));
    let d = h.s.fleet_demand();
    let placed = d.iter().find(|d| d.inflight == 1).unwrap();
    assert!(placed.wants, "placed since the last sync: {d:?}");
    assert!(
        h.s.fleet_demand().iter().all(|d| !d.wants),
        "reset at each call"
    );
}

#[test]
fn routing_prefers_the_instance_the_fleet_loads_less() {
    let mut h = H::fifo(&[8, 8]);
    let busy = InstanceId::new("i0");
    let share = |i: &InstanceId| FleetShare {
        others: if *i == busy { 6 } else { 0 },
        cap: None,
    };
    h.s.set_fleet(&share, ms(0));
    for n in 0..3 {
        h.submit(meta(n, ms(1)), ms(1));
        h.poll(ms(1));
    }
    for n in 0..3 {
        assert_eq!(
            h.instance_of(n).as_str(),
            "i1",
            "request {n} avoids the busy one"
        );
    }
}
