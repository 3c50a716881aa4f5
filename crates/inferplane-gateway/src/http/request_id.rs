//! Request ids: 32 hex digits, unique per process without a system call per request.

/// A request id no other request of this process (and, but for a 2^-64 chance, of any
/// other gateway) gets: 32 hex digits, a random half drawn once per process and a
/// bijective mix of a counter, so ids are unique without a system call per request (a
/// random UUID per request costs one `getrandom`).
pub fn new_request_id() -> String {
    static SEED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (hi, lo) = *SEED.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{hi:016x}{:016x}", mix(lo ^ n))
}

/// SplitMix64's finalizer: a bijection on `u64` (distinct inputs, distinct outputs).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_32_hex_digits() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
