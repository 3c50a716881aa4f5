use super::*;

#[test]
fn candidate_set_counts_members_iterates_in_order_and_retains() {
    let mut s = CandidateSet::default();
    s.reset(130);
    for ix in [129, 3, 64, 3] {
        s.insert(ix);
    }
    s.insert(500);
    assert_eq!(s.len(), 3);
    assert_eq!(s.iter().collect::<Vec<_>>(), [3, 64, 129]);
    s.remove(64);
    assert!(!s.contains(64) && s.contains(129));
    assert_eq!(s.len(), 2);
    s.retain(|ix| ix > 100);
    assert_eq!(s.iter().collect::<Vec<_>>(), [129]);
    assert_eq!(s.len(), 1);
    s.reset(10);
    assert!(s.is_empty());
}

#[test]
fn an_index_names_its_slot_and_generation() {
    let a = InstanceIx::new(3, 0);
    let b = InstanceIx::new(3, 1);
    assert_eq!(a.slot(), b.slot());
    assert_ne!(a, b, "a reused slot is another instance");
    assert_eq!(b.generation(), 1);
}

#[test]
fn load_bound_allows_at_most_the_ceiling_of_factor_times_mean() {
    let st = testkit::states(&[(10, 3), (10, 1), (10, 0), (10, 0)]);
    let v = testkit::view(&st);
    // mean after one more = 5/4 = 1.25; 1.25 * 1.25 = 1.5625 -> ceil 2
    assert!(!v.within_load_bound(0, 1.25));
    assert!(v.within_load_bound(1, 1.25));
    assert!(v.within_load_bound(2, 1.25));
}

#[test]
fn a_context_fits_up_to_the_engines_length_and_an_unknown_one_fits_anything() {
    let mut st = testkit::states(&[(4, 0)]);
    let s = st[0].as_mut().unwrap();
    assert!(s.fits(1_000_000), "unknown fits");
    s.engine.max_model_len = Some(8192);
    assert!(s.fits(8192) && !s.fits(8193));
    assert_eq!(s.context_len(), Some(8192));
}
