//! Prompt text for a [`WorkItem`], built so that the simulator's prefix cache sees exactly
//! the sharing the workload describes.
//!
//! Every token is four ASCII bytes (three letters and a space), the simulator's stand-in
//! tokenizer counts one token per four bytes, so a prompt of `n` tokens is `4n` bytes.
//! Token `j` of a prompt comes from one of three deterministic streams: the prefix group's
//! (for `j < prefix_tokens`), else the session's (so a later turn repeats the earlier
//! turn's prompt), else the request's own. The discrete-event simulation hashes the same
//! text, so live and simulated runs share cache hits block for block.

use crate::workload::WorkItem;
use xxhash_rust::xxh3::xxh3_64_with_seed;

const GROUP: u64 = 0x6772_6f75_7000_0000;
const SESSION: u64 = 0x7365_7373_0000_0000;
const REQUEST: u64 = 0x7265_7175_0000_0000;

fn stream_key(kind: u64, id: u64) -> u64 {
    xxh3_64_with_seed(&id.to_le_bytes(), kind)
}

/// The prompt text of `item`; `request_key` makes requests without a session unique (the
/// item's index plus a per-run salt).
pub fn prompt_text(item: &WorkItem, request_key: u64) -> String {
    let n = item.prompt_tokens.max(1);
    let mut out: Vec<u8> = Vec::with_capacity(n as usize * 4);
    let group = item.prefix_group.map(|g| stream_key(GROUP, u64::from(g)));
    let own = match item.session {
        Some(s) => stream_key(SESSION, s),
        None => stream_key(REQUEST, request_key),
    };
    // One 64-bit hash gives four tokens of three letters (15 bits each): token `j` is
    // drawn from the hash of `j / 4` in its stream.
    let mut cached: Option<(u64, u32, u64)> = None;
    for j in 0..n {
        let key = match group {
            Some(g) if j < item.prefix_tokens => g,
            _ => own,
        };
        let h = match cached {
            Some((k, q, h)) if k == key && q == j / 4 => h,
            _ => {
                let h = xxh3_64_with_seed(&(j / 4).to_le_bytes(), key);
                cached = Some((key, j / 4, h));
                h
            }
        };
        let bits = (h >> (15 * (j % 4))) & 0x7fff;
        out.extend_from_slice(&[
            b'a' + (bits % 26) as u8,
            b'a' + (bits / 26 % 26) as u8,
            b'a' + (bits / 676 % 26) as u8,
            b' ',
        ]);
    }
    // Only ASCII letters and spaces were written, so this never fails.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferplane_sim::tokens::{block_hashes, count_tokens};

    #[test]
    fn prompts_have_the_asked_token_count_and_share_exactly_the_described_blocks() {
        let mut a = WorkItem::plain(0.0, 100, 10);
        a.prefix_group = Some(3);
        a.prefix_tokens = 64;
        let mut b = a.clone();
        b.prompt_tokens = 90;
        let (ta, tb) = (prompt_text(&a, 1), prompt_text(&b, 2));
        assert_eq!(count_tokens(&ta), 100);
        let (ha, hb) = (block_hashes(&ta), block_hashes(&tb));
        assert_eq!(ha.len(), 6);
        assert_eq!(ha[..4], hb[..4], "the 64-token prefix is 4 shared blocks");
        assert_ne!(ha[4], hb[4]);
        // A session's next turn repeats the previous prompt.
        let mut s1 = WorkItem::plain(0.0, 50, 10);
        s1.session = Some(9);
        let mut s2 = s1.clone();
        s2.prompt_tokens = 120;
        let (h1, h2) = (
            block_hashes(&prompt_text(&s1, 1)),
            block_hashes(&prompt_text(&s2, 2)),
        );
        assert_eq!(h1[..], h2[..h1.len()]);
        assert_ne!(
            prompt_text(&WorkItem::plain(0.0, 50, 1), 1),
            prompt_text(&WorkItem::plain(0.0, 50, 1), 2)
        );
    }
}
