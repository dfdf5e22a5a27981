"""The ledger's rules, property-tested: order independence, forgery, double spend, conservation."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from wwwserve.ledger.book import DEDUP_WINDOW_MS, compute
from wwwserve.ledger.checkpoint import CheckpointVote, choose, digest, encode_state
from wwwserve.ledger.identity import new_identity
from wwwserve.ledger.records import INITIAL_GRANT, Receipt, Stake
from wwwserve.ledger.store import Ledger

IDS = [new_identity(n) for n in ("alice", "bob", "carol")]


def receipt(server: int, origin: int, tokens: int, price: float, ts: int, rid: str) -> Receipt:
    s, o = IDS[server], IDS[origin]
    r = Receipt(
        request_id=rid,
        model="m",
        prompt_tokens=tokens,
        completion_tokens=tokens,
        price=price,
        server=s.name,
        server_key=s.public_key,
        origin=o.name,
        ts_ms=ts,
    )
    return r.signed_by_server(s).countersigned_by(o)


receipts = (
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 2),
            st.integers(0, 400),
            st.sampled_from([0.0, 0.5, 1.0, 2.0]),
            st.integers(0, 50),
        ),
        min_size=1,
        max_size=25,
    )
    .map(
        lambda rows: [receipt(s, o, t, p, ts, f"req{i}") for i, (s, o, t, p, ts) in enumerate(rows) if s != o]
    )
    .filter(bool)
)


@settings(max_examples=40, deadline=None)
@given(receipts, st.randoms(use_true_random=False))
def test_balances_do_not_depend_on_receipt_order(rs: list[Receipt], rnd: random.Random) -> None:
    shuffled = rs[:]
    rnd.shuffle(shuffled)
    a, b = compute(rs), compute(shuffled)
    assert a.balances == b.balances and sorted(a.valid) == sorted(b.valid)


@settings(max_examples=40, deadline=None)
@given(receipts, st.randoms(use_true_random=False))
def test_a_newcomer_from_a_checkpoint_agrees_with_a_full_replay_of_the_stream(
    rs: list[Receipt], rnd: random.Random
) -> None:
    """Readers of the same stream agree, and so does one that starts from a checkpoint state (after a
    JSON round trip, as it travels) and folds only the rest; re-sent records count once."""
    stream = rs + rnd.sample(rs, k=len(rs) // 4)  # some records published twice (an outbox resend)
    rnd.shuffle(stream)
    full = Ledger(None)
    for seq, r in enumerate(stream, 1):
        full.add(r, seq)
    cut = rnd.randrange(len(stream) + 1)
    head = Ledger(None)
    for seq, r in enumerate(stream[:cut], 1):
        head.add(r, seq)
    data = encode_state(head.state())
    newcomer = Ledger(None)
    newcomer.restore(json.loads(data))
    for seq, r in enumerate(stream[cut:], cut + 1):
        newcomer.add(r, seq)
    for v in (newcomer.view,):
        assert (v.balances, v.stakes, v.valid, v.invalid, v.receipts) == (
            full.view.balances,
            full.view.stakes,
            full.view.valid,
            full.view.invalid,
            full.view.receipts,
        )
    assert digest(encode_state(newcomer.state())) == digest(encode_state(full.state()))
    assert full.view.receipts == len({r.id for r in rs}) - len(full.view.invalid)
    for ledger in (full, head, newcomer):
        ledger.close()


def test_a_checkpoint_needs_a_quorum_of_valid_signatures() -> None:
    vote = [
        CheckpointVote(seq=s, digest=d, signer=i.name, key=i.public_key, ts_ms=1).signed(i)
        for s, d, i in [(10, "aa", IDS[0]), (10, "aa", IDS[1]), (20, "bb", IDS[2])]
    ]
    forged = vote[2].model_copy(update={"signer": "bob"})  # carol's signature under bob's name
    assert choose(vote, 2) == (10, "aa")
    assert choose([*vote, forged], 2) == (10, "aa")
    assert choose(vote, 1) == (20, "bb")
    assert choose(vote, 3) is None


def test_records_older_than_the_dedupe_window_are_stale() -> None:
    ledger = Ledger(None)
    assert ledger.add(receipt(0, 1, 5, 1.0, DEDUP_WINDOW_MS + 10, "new")) == "added"
    assert ledger.add(receipt(0, 1, 5, 1.0, 1, "old")).startswith("stale")
    assert ledger.add(receipt(0, 1, 5, 1.0, DEDUP_WINDOW_MS + 10, "new")) == "duplicate"
    ledger.close()


@settings(max_examples=40, deadline=None)
@given(receipts)
def test_total_is_conserved_and_nobody_overdraws(rs: list[Receipt]) -> None:
    view = compute(rs)
    assert abs(sum(view.balances.values()) - INITIAL_GRANT * len(view.keys)) < 1e-6
    assert all(b >= -1e-9 for b in view.balances.values())


@settings(max_examples=30, deadline=None)
@given(receipts, st.sampled_from(["prompt_tokens", "price", "server", "origin", "request_id"]))
def test_tampered_receipts_are_rejected(rs: list[Receipt], field: str) -> None:
    original = rs[0]
    value = {
        "prompt_tokens": original.prompt_tokens + 1,
        "price": original.price + 1,
        "server": "mallory",
        "origin": "mallory",
        "request_id": original.request_id + "x",
    }[field]
    forged = original.model_copy(update={field: value})
    assert not forged.signatures_valid()
    ledger = Ledger(None)
    assert ledger.add(forged) == "bad signature" and not ledger.view.recent and not ledger.view.keys


def test_a_receipt_signed_by_the_wrong_key_is_rejected() -> None:
    mallory = new_identity("alice")  # claims alice's name with another key
    good = receipt(0, 1, 10, 1.0, 1, "a")
    fake = Receipt(
        request_id="b",
        model="m",
        prompt_tokens=10,
        completion_tokens=10,
        price=1.0,
        server="alice",
        server_key=mallory.public_key,
        origin="bob",
        ts_ms=2,
    ).signed_by_server(mallory)
    fake = fake.countersigned_by(IDS[1])
    view = compute([good, fake])
    assert "r:a:alice" in view.valid and view.invalid["r:b:alice"].startswith("key does not match")


def test_no_double_spend() -> None:
    # bob holds 1000; he signs two receipts of 600 each, to alice and to carol
    first = receipt(0, 1, 300, 1.0, 10, "x")
    second = receipt(2, 1, 300, 1.0, 11, "y")
    for order in ([first, second], [second, first]):
        view = compute(order)
        assert view.balances["bob"] == INITIAL_GRANT - 600 and "r:y:carol" in view.invalid
        assert view.invalid["r:y:carol"] == "overdraft"


def test_stake_locks_credits() -> None:
    bob = IDS[1]
    stake = Stake(provider="bob", key=bob.public_key, amount=700, ts_ms=1).signed(bob)
    spend = receipt(0, 1, 200, 1.0, 2, "z")  # 400 > 1000 - 700
    view = compute([stake, spend])
    assert view.stakes["bob"] == 700 and view.invalid["r:z:alice"] == "overdraft"


def test_ledger_persists_across_restarts(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "ledger.sqlite"
    ledger = Ledger(path)
    assert ledger.add(receipt(0, 1, 5, 1.0, 1, "p")) == "added"
    assert ledger.add(receipt(0, 1, 5, 1.0, 1, "p")) == "duplicate"
    ledger.close()
    again = Ledger(path)
    assert again.view.balances == {"alice": INITIAL_GRANT + 10, "bob": INITIAL_GRANT - 10}


def test_records_of_a_pre_stream_data_directory_go_to_the_outbox(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    path = Path(str(tmp_path)) / "ledger.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE records (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    r = receipt(0, 1, 5, 1.0, 1, "legacy")
    old.execute("INSERT INTO records VALUES (?, ?)", (r.id, r.model_dump_json()))
    old.commit()
    old.close()
    ledger = Ledger(path)
    assert [x.id for x in ledger.held()] == [r.id]
    ledger.close()
