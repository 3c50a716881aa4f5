use super::*;

/// Minimal msgpack writer for hand-built payloads (independent of rmp-serde).
fn fixarray(n: u8) -> u8 {
    0x90 | n
}
fn fixmap(n: u8) -> u8 {
    0x80 | n
}
fn fixstr(s: &str) -> Vec<u8> {
    let mut v = vec![0xa0 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}
fn float64(x: f64) -> Vec<u8> {
    let mut v = vec![0xcb];
    v.extend_from_slice(&x.to_be_bytes());
    v
}
fn uint64(x: u64) -> Vec<u8> {
    let mut v = vec![0xcf];
    v.extend_from_slice(&x.to_be_bytes());
    v
}
const NIL: u8 = 0xc0;

/// `[1.5, [["BlockStored", [u64::MAX-1, -7], nil, [1, 2, 3, 4], 2, nil, "GPU"],
///        ["BlockRemoved", [5], "GPU"], ["AllBlocksCleared"]]]`, as msgspec writes
/// vLLM's `array_like` structs.
fn array_layout() -> Vec<u8> {
    let mut b = vec![fixarray(2)];
    b.extend(float64(1.5));
    b.push(fixarray(3));
    b.push(fixarray(7));
    b.extend(fixstr("BlockStored"));
    b.push(fixarray(2));
    b.extend(uint64(u64::MAX - 1));
    b.push(0xf9); // negative fixint -7
    b.push(NIL);
    b.extend([fixarray(4), 1, 2, 3, 4]);
    b.push(2);
    b.push(NIL);
    b.extend(fixstr("GPU"));
    b.push(fixarray(3));
    b.extend(fixstr("BlockRemoved"));
    b.extend([fixarray(1), 5]);
    b.extend(fixstr("GPU"));
    b.push(fixarray(1));
    b.extend(fixstr("AllBlocksCleared"));
    b
}

#[test]
fn decodes_vllm_array_like_layout_with_int_hashes() {
    let batch = decode_batch(&array_layout()).unwrap();
    assert_eq!(batch.ts, 1.5);
    assert_eq!(batch.data_parallel_rank, None);
    assert_eq!(
        batch.events,
        vec![
            KvEvent::BlockStored(BlockStored {
                block_hashes: vec![BlockHash::Int(i128::from(u64::MAX - 1)), BlockHash::Int(-7)],
                parent_block_hash: None,
                token_ids: vec![1, 2, 3, 4],
                block_size: 2,
                lora_id: None,
                medium: Some("GPU".into()),
            }),
            KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![BlockHash::Int(5)],
                medium: Some("GPU".into()),
            }),
            KvEvent::AllBlocksCleared,
        ]
    );
}

#[test]
fn blocks_pair_hashes_with_their_tokens_only_when_lengths_agree() {
    let mut s = BlockStored {
        block_hashes: vec![BlockHash::Int(1), BlockHash::Int(2)],
        parent_block_hash: None,
        token_ids: vec![1, 2, 3, 4],
        block_size: 2,
        lora_id: None,
        medium: None,
    };
    let pairs: Vec<_> = s.blocks().unwrap().collect();
    assert_eq!(pairs[1], (&BlockHash::Int(2), &[3u32, 4][..]));
    s.token_ids.pop();
    assert!(s.blocks().is_none(), "short token list");
    s.block_size = 0;
    assert!(s.blocks().is_none(), "zero block size");
}

#[test]
fn encoding_writes_the_same_array_layout_and_round_trips() {
    let batch = decode_batch(&array_layout()).unwrap();
    // Re-encoding gives the same events (ints may take a shorter msgpack form).
    let again = decode_batch(&encode_batch(&batch).unwrap()).unwrap();
    assert_eq!(again, batch);
    let ranked = KvEventBatch {
        data_parallel_rank: Some(3),
        ..batch
    };
    let bytes = encode_batch(&ranked).unwrap();
    assert_eq!(
        bytes[0],
        fixarray(3),
        "data_parallel_rank appended when set"
    );
    assert_eq!(decode_batch(&bytes).unwrap().data_parallel_rank, Some(3));
    let plain = encode_batch(&KvEventBatch {
        ts: 0.0,
        events: vec![],
        data_parallel_rank: None,
    })
    .unwrap();
    assert_eq!(plain[0], fixarray(2), "omit_defaults: no trailing nil");
}

#[test]
fn decodes_the_oldest_layout_without_medium() {
    // ["BlockStored", [1], 9, [7, 7], 2, 3] and ["BlockRemoved", [1]]
    let mut b = vec![fixarray(2)];
    b.extend(float64(0.25));
    b.push(fixarray(2));
    b.push(fixarray(6));
    b.extend(fixstr("BlockStored"));
    b.extend([fixarray(1), 1, 9, fixarray(2), 7, 7, 2, 3]);
    b.push(fixarray(2));
    b.extend(fixstr("BlockRemoved"));
    b.extend([fixarray(1), 1]);
    let batch = decode_batch(&b).unwrap();
    let KvEvent::BlockStored(s) = &batch.events[0] else {
        panic!("expected BlockStored")
    };
    assert_eq!(s.parent_block_hash, Some(BlockHash::Int(9)));
    assert_eq!(s.lora_id, Some(3));
    assert_eq!(s.medium, None);
    assert!(matches!(&batch.events[1], KvEvent::BlockRemoved(r) if r.medium.is_none()));
}

#[test]
fn decodes_the_map_layout_with_byte_hashes_and_unknown_fields() {
    // {"ts": 2.0, "events": [{"type": "BlockStored", "block_hashes": [b"\x01\x02"],
    //   "parent_block_hash": b"\x09", "token_ids": [5], "block_size": 1,
    //   "lora_id": nil, "medium": "GPU", "lora_name": nil, "group_idx": 0}],
    //  "data_parallel_rank": 1}
    let bin = |bytes: &[u8]| {
        let mut v = vec![0xc4, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    };
    let mut b = vec![fixmap(3)];
    b.extend(fixstr("ts"));
    b.extend(float64(2.0));
    b.extend(fixstr("events"));
    b.push(fixarray(1));
    b.push(fixmap(9));
    b.extend(fixstr("type"));
    b.extend(fixstr("BlockStored"));
    b.extend(fixstr("block_hashes"));
    b.push(fixarray(1));
    b.extend(bin(&[1, 2]));
    b.extend(fixstr("parent_block_hash"));
    b.extend(bin(&[9]));
    b.extend(fixstr("token_ids"));
    b.extend([fixarray(1), 5]);
    b.extend(fixstr("block_size"));
    b.push(1);
    b.extend(fixstr("lora_id"));
    b.push(NIL);
    b.extend(fixstr("medium"));
    b.extend(fixstr("GPU"));
    b.extend(fixstr("lora_name"));
    b.push(NIL);
    b.extend(fixstr("group_idx"));
    b.push(0);
    b.extend(fixstr("data_parallel_rank"));
    b.push(1);
    let batch = decode_batch(&b).unwrap();
    assert_eq!(batch.data_parallel_rank, Some(1));
    assert_eq!(
        batch.events,
        vec![KvEvent::BlockStored(BlockStored {
            block_hashes: vec![BlockHash::Bytes(vec![1, 2])],
            parent_block_hash: Some(BlockHash::Bytes(vec![9])),
            token_ids: vec![5],
            block_size: 1,
            lora_id: None,
            medium: Some("GPU".into()),
        })]
    );
}

#[test]
fn newer_array_fields_after_medium_are_ignored() {
    // ["BlockRemoved", [4], "GPU", 0]: group_idx appended by a newer release.
    let mut b = vec![fixarray(2)];
    b.extend(float64(0.0));
    b.push(fixarray(1));
    b.push(fixarray(4));
    b.extend(fixstr("BlockRemoved"));
    b.extend([fixarray(1), 4]);
    b.extend(fixstr("GPU"));
    b.push(0);
    let batch = decode_batch(&b).unwrap();
    assert_eq!(batch.events.len(), 1);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let full = array_layout();
    for cut in 0..full.len() {
        assert!(decode_batch(&full[..cut]).is_err(), "truncated at {cut}");
    }
    let mut unknown = vec![fixarray(2)];
    unknown.extend(float64(0.0));
    unknown.push(fixarray(1));
    unknown.push(fixarray(1));
    unknown.extend(fixstr("BlockMoved"));
    let err = decode_batch(&unknown).unwrap_err();
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("BlockMoved")
    );
    assert!(decode_batch(b"\xc1").is_err());
    assert!(
        decode_batch(&[fixarray(2), 1, 2]).is_err(),
        "events not a list"
    );
    // A BlockStored missing its required fields.
    let mut short = vec![fixarray(2)];
    short.extend(float64(0.0));
    short.push(fixarray(1));
    short.push(fixarray(2));
    short.extend(fixstr("BlockStored"));
    short.push(fixarray(0));
    assert!(decode_batch(&short).is_err());
}
