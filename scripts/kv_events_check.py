"""Wire check of the simulator's KV cache events with a third-party stack: pyzmq and msgspec.

Starts `inferplane sim --kv-events-config ...` on OS-chosen ports, subscribes with a pyzmq
SUB socket, sends a few chat requests (enough distinct prompts to make the small cache
evict), and decodes every message with msgspec using vLLM's own struct declarations
(`vllm/distributed/kv_events.py`, the `array_like=True` releases), written out below.
It also asks the replay socket (ROUTER; the request is an empty delimiter frame and the
start sequence number as 8 big-endian bytes) for everything from 0 and checks the framing
and the end marker. Asserts that BlockStored and BlockRemoved events decode.

Run by .ci/run inside a venv: python scripts/kv_events_check.py path/to/inferplane
Without pyzmq or msgspec it says so and exits 0 (skipped).
"""

import json
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any, Optional, Union

try:
    import msgspec
    import zmq
except ImportError as e:
    print(f"SKIPPED kv events wire check: {e.name} is not installed (pip install pyzmq msgspec)")
    sys.exit(0)


# vLLM's declarations (the array_like releases, with `medium`).
class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]


class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    """Base class for all KV cache-related events"""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: Optional[int]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str]


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: Optional[str]


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]


TOPIC = "kv-events"


def chat(base: str, content: str) -> None:
    body = json.dumps(
        {"model": "py-model", "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    ).encode()
    req = urllib.request.Request(
        base + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200, resp.status
        resp.read()


def read_endpoints(proc: subprocess.Popen) -> tuple[str, str, str]:
    url = pub = replay = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (url and pub and replay):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"(http://127\.0\.0\.1:\d+)", line):
            url = m.group(1)
        if m := re.search(r"KV events on (tcp://\S+), replay on (tcp://\S+)", line):
            pub, replay = m.group(1), m.group(2)
    if not (url and pub and replay):
        raise SystemExit(f"could not read the simulator's endpoints (url={url}, pub={pub})")
    return url, pub, replay


def main() -> int:
    binary = sys.argv[1]
    config = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "tcp://127.0.0.1:0",
        "replay_endpoint": "tcp://127.0.0.1:0",
        "topic": TOPIC,
    }
    proc = subprocess.Popen(
        [binary, "sim", "--port", "0", "--model", "py-model", "--profile", "tiny",
         "--kv-blocks", "64", "--kv-events-config", json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    ctx = zmq.Context()
    try:
        url, pub, replay = read_endpoints(proc)
        decoder = msgspec.msgpack.Decoder(type=KVEventBatch)

        sub = ctx.socket(zmq.SUB)
        sub.connect(pub)
        sub.setsockopt_string(zmq.SUBSCRIBE, TOPIC)
        time.sleep(0.5)  # let the subscription reach the publisher before the first event

        chat(url, "a shared system prompt that is long enough to fill blocks. " * 20)
        for i in range(6):
            chat(url, f"{i} other prompt text. " * 60)

        live: list[tuple[int, KVEventBatch]] = []
        while sub.poll(1000):
            topic, seq, payload = sub.recv_multipart()
            assert topic == TOPIC.encode(), topic
            assert len(seq) == 8, seq
            live.append((int.from_bytes(seq, "big"), decoder.decode(payload)))
        assert live, "no live events received"
        seqs = [s for s, _ in live]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gaps in {seqs}"

        events = [e for _, b in live for e in b.events]
        stored = [e for e in events if isinstance(e, BlockStored)]
        removed = [e for e in events if isinstance(e, BlockRemoved)]
        assert stored, "no BlockStored"
        assert removed, "no BlockRemoved (the 64-block cache should evict)"
        for e in stored:
            assert e.block_size == 16, e.block_size
            assert len(e.token_ids) == 16 * len(e.block_hashes), e
            assert e.medium == "GPU", e.medium
        evicted = {h for e in removed for h in e.block_hashes}
        assert evicted & {h for e in stored for h in e.block_hashes}, "evicted blocks were stored"

        # Replay: a DEALER speaks the REQ framing (empty delimiter) and may take many replies.
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(replay)
        dealer.send_multipart([b"", (0).to_bytes(8, "big")])
        replayed = []
        while True:
            assert dealer.poll(5000), "replay answer timed out"
            delim, seq, payload = dealer.recv_multipart()
            assert delim == b"", delim
            if int.from_bytes(seq, "big", signed=True) == -1:
                assert payload == b"", "end marker has an empty payload"
                break
            replayed.append((int.from_bytes(seq, "big"), decoder.decode(payload)))
        assert [s for s, _ in replayed] == list(range(len(replayed))), "replay starts at 0"
        assert [s for s, _ in replayed][-len(live):] == seqs, "replay covers the live batches"

        print(
            f"kv events (pyzmq {zmq.__version__} + msgspec {msgspec.__version__}): "
            f"{len(live)} batches, {len(stored)} BlockStored, {len(removed)} BlockRemoved, "
            f"{len(replayed)} replayed OK"
        )
        return 0
    finally:
        ctx.destroy(linger=0)
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
