//! Tests of the translation of engine KV events into the gateway's own hashes.

use super::*;
use inferplane_core::prefix::block_hashes_of_ids;
use inferplane_kv_events::BlockRemoved;

/// An engine's salted hash of the gateway's own (any bijection will do).
fn salted(own: u64) -> BlockHash {
    BlockHash::Bytes((own ^ 0xdead_beef).to_be_bytes().repeat(4))
}

fn stored(prompt: &[u32], from: usize, to: usize) -> KvEvent {
    let own = block_hashes_of_ids(prompt);
    KvEvent::BlockStored(BlockStored {
        block_hashes: own[from..to].iter().copied().map(salted).collect(),
        parent_block_hash: from.checked_sub(1).map(|p| salted(own[p])),
        token_ids: prompt[from * 16..to * 16].to_vec(),
        block_size: 16,
        lora_id: None,
        medium: Some("GPU".into()),
    })
}

fn batch(events: Vec<KvEvent>) -> KvEventBatch {
    KvEventBatch {
        ts: 0.0,
        events,
        data_parallel_rank: None,
    }
}

fn prompt(blocks: u32, salt: u32) -> Vec<u32> {
    (0..blocks * 16).map(|i| i * 31 + salt).collect()
}

#[test]
fn own_hashes_of_stored_blocks_are_the_prompts_chain_even_split_over_events() {
    let p = prompt(5, 1);
    let mut t = Translator::new(MAX_MAPPED_BLOCKS);
    let mut out = Vec::new();
    let c = t.batch(
        "i",
        &batch(vec![stored(&p, 0, 2), stored(&p, 2, 5)]),
        &mut out,
    );
    let own = block_hashes_of_ids(&p);
    assert_eq!(
        out,
        vec![
            Change::Stored(own[..2].to_vec()),
            Change::Stored(own[2..].to_vec())
        ]
    );
    assert_eq!(c.stored, 5);
    assert_eq!(c.unplaced, 0);
    assert_eq!(t.len(), 5);
}

#[test]
fn removals_map_engine_hashes_back_to_own_ones_and_forget_them() {
    let p = prompt(3, 2);
    let own = block_hashes_of_ids(&p);
    let mut t = Translator::new(MAX_MAPPED_BLOCKS);
    let mut out = Vec::new();
    t.batch("i", &batch(vec![stored(&p, 0, 3)]), &mut out);
    out.clear();
    let removed = KvEvent::BlockRemoved(BlockRemoved {
        block_hashes: vec![salted(own[2]), salted(own[1]), salted(12345)],
        medium: None,
    });
    let c = t.batch("i", &batch(vec![removed.clone()]), &mut out);
    assert_eq!(out, vec![Change::Removed(vec![own[2], own[1]])]);
    assert_eq!(c.removed, 2, "an unknown engine hash is not counted");
    assert_eq!(t.len(), 1);
    out.clear();
    t.batch("i", &batch(vec![removed]), &mut out);
    assert!(out.is_empty(), "removed once");
}

#[test]
fn blocks_whose_parent_is_unknown_are_not_placed() {
    let p = prompt(4, 3);
    let mut t = Translator::new(MAX_MAPPED_BLOCKS);
    let mut out = Vec::new();
    // joined late: the first two blocks were stored before
    let c = t.batch("i", &batch(vec![stored(&p, 2, 4)]), &mut out);
    assert!(out.is_empty());
    assert_eq!(c.unplaced, 2);
    assert!(t.is_empty());
}

#[test]
fn a_block_size_other_than_sixteen_is_ignored_and_remembered() {
    let p = prompt(2, 4);
    let KvEvent::BlockStored(mut s) = stored(&p, 0, 2) else {
        unreachable!()
    };
    s.block_size = 32;
    s.block_hashes.truncate(1);
    let mut t = Translator::new(MAX_MAPPED_BLOCKS);
    let mut out = Vec::new();
    let c = t.batch("i", &batch(vec![KvEvent::BlockStored(s)]), &mut out);
    assert!(out.is_empty());
    assert_eq!(c.unplaced, 1);
    assert_eq!(t.odd_block_size, Some(32));
}

#[test]
fn lora_and_cpu_blocks_and_short_token_ids_are_not_placed() {
    let p = prompt(2, 5);
    let mut t = Translator::new(MAX_MAPPED_BLOCKS);
    for f in [
        (|s: &mut BlockStored| s.lora_id = Some(1)) as fn(&mut BlockStored),
        |s| s.medium = Some("CPU".into()),
        |s| {
            s.token_ids.pop();
        },
    ] {
        let KvEvent::BlockStored(mut s) = stored(&p, 0, 2) else {
            unreachable!()
        };
        f(&mut s);
        let mut out = Vec::new();
        let c = t.batch("i", &batch(vec![KvEvent::BlockStored(s)]), &mut out);
        assert!(out.is_empty());
        assert_eq!(c.unplaced, 2);
    }
    assert!(t.is_empty());
}

#[test]
fn a_clear_forgets_the_map_and_the_bound_holds() {
    let p = prompt(4, 6);
    let mut t = Translator::new(3);
    let mut out = Vec::new();
    let c = t.batch("i", &batch(vec![stored(&p, 0, 4)]), &mut out);
    assert_eq!(
        (c.stored, c.unplaced),
        (3, 1),
        "the fourth block is past the bound"
    );
    assert_eq!(t.len(), 3);
    out.clear();
    let c = t.batch("i", &batch(vec![KvEvent::AllBlocksCleared]), &mut out);
    assert_eq!(out, vec![Change::Cleared]);
    assert_eq!(c.cleared, 1);
    assert!(t.is_empty());
}
