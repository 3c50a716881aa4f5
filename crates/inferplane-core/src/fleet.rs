//! Fleet-wide in-flight counts: when several gateway replicas send to the same engines,
//! each replica learns what the others have in flight on every instance (the gateway
//! shares it through Redis) and the scheduler judges room and load on the fleet's total,
//! not its own share.
//!
//! Room is split by **reservations**, made one replica at a time (atomically, in the
//! shared store) at each replica's sync: with limit `L`, this replica's in-flight `own`
//! and the other replicas' reservations `R`, the room left is `free = L - own - R` (at
//! least 0); a replica that wants more (it placed work there since its last sync, or its
//! queue is not empty) reserves `own + ceil(free / b)`, with `b` the replicas that want
//! more; one that does not reserves `own + min(1, free)` (a first request never waits for
//! a sync). Until its next sync a replica keeps its in-flight within its reservation.
//! Each new reservation fits in what the others left, so the reservations, and with them
//! the attempts in flight, stay within `L` whenever they were within it before; a replica
//! that stops syncing loses its reservation when it expires. A replica that has heard
//! nothing (no shared store, or it is down) has no reservation and uses the whole limit,
//! exactly as a single gateway does.

/// What the other gateway replicas have in flight on one instance, and this replica's
/// reservation of it, as of the last sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetShare {
    /// Attempts the other replicas have in flight on it.
    pub others: u32,
    /// The most attempts this replica may have in flight on it until the next sync
    /// (see the module docs); `None`: no bound beyond the limit (a single replica).
    pub cap: Option<u32>,
}

impl FleetShare {
    /// Whether this replica may place one more attempt on an instance with `own` in
    /// flight and in-flight `limit`.
    pub fn allows(&self, own: u32, limit: u32) -> bool {
        own.saturating_add(self.others) < limit && self.cap.is_none_or(|c| own < c)
    }
}

/// One instance as this replica asks for it at a sync (see
/// `Scheduler::fleet_demand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDemand {
    /// The instance.
    pub id: crate::instance::InstanceId,
    /// This replica's attempts in flight on it.
    pub inflight: u32,
    /// Its in-flight limit.
    pub limit: u32,
    /// Whether this replica wants more room on it.
    pub wants: bool,
}

/// A replica's reservation of an instance with in-flight `limit` (see the module docs):
/// `own` in flight, the others' reservations `reserved`, `wanting` replicas that want
/// more (this one included if `wants`). The shared store computes the same.
pub fn reservation(limit: u32, own: u32, reserved: u32, wanting: u32, wants: bool) -> u32 {
    let free = limit.saturating_sub(own.saturating_add(reserved));
    let extra = if wants {
        free.div_ceil(wanting.max(1))
    } else {
        free.min(1)
    };
    own.saturating_add(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_without_a_reservation_has_the_whole_limit() {
        let s = FleetShare::default();
        assert!(s.allows(7, 8));
        assert!(!s.allows(8, 8));
    }

    #[test]
    fn reservations_made_one_after_another_never_exceed_the_limit() {
        // three replicas wanting more, reserving in turn, round after round, while their
        // attempts come and go: the sum of reservations stays within the limit
        let limit = 10u32;
        let mut res = [0u32; 3];
        let mut own = [0u32; 3];
        for round in 0..50u32 {
            for r in 0..3 {
                // its in-flight moved within its reservation since its last sync
                own[r] = (own[r] + round * 7 + r as u32) % (res[r] + 1);
                let others: u32 = (0..3).filter(|&o| o != r).map(|o| res[o]).sum();
                res[r] = reservation(limit, own[r], others, 3, true);
                assert!(res.iter().sum::<u32>() <= limit, "round {round}: {res:?}");
            }
        }
        assert!(
            res.iter().sum::<u32>() >= limit - 2,
            "the room is used: {res:?}"
        );
    }

    #[test]
    fn an_idle_replica_keeps_one_place_and_a_busy_one_its_share() {
        assert_eq!(reservation(8, 0, 0, 2, false), 1);
        assert_eq!(reservation(8, 0, 1, 2, true), 4, "ceil(7 / 2)");
        assert_eq!(
            reservation(8, 3, 5, 2, true),
            3,
            "nothing free: what it has"
        );
        assert_eq!(
            reservation(8, 6, 5, 1, true),
            6,
            "over: no more, none taken away"
        );
    }

    #[test]
    fn others_count_against_the_limit_and_the_cap_bounds_this_replica() {
        let s = FleetShare {
            others: 4,
            cap: Some(4),
        };
        assert!(!s.allows(0, 4));
        let s = FleetShare {
            others: 1,
            cap: Some(2),
        };
        assert!(s.allows(1, 4));
        assert!(!s.allows(2, 4));
    }
}
