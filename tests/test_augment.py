"""Argument substitution: copies whose arguments come from the utterance, never from the phrasing."""

from __future__ import annotations

import random

from intentops.grammar import parse_calls
from intentops.training.augment import substitute, substituted_copies, value_pools

RECORDS = [
    {"id": "a", "text": "Ring David a call", "output": "call_contact(David)"},
    {"id": "b", "text": "Give Olivia a call", "output": "call_contact(Olivia)"},
    {"id": "c", "text": "给张伟打个电话", "output": "call_contact(张伟)"},
    {"id": "d", "text": "打电话给李娜", "output": "call_contact(李娜)"},
    {"id": "e", "text": "Text Grandma that I'll be late", "output": 'send_message(Grandma,"I\'ll be late")'},
    {"id": "f", "text": "Tell Tom dinner is ready", "output": "send_message(Tom,dinner is ready)"},
    {"id": "g", "text": "Pause the music", "output": "music_pause()"},
    {"id": "h", "text": "Call David, then text Tom that dinner is ready", "output": "call_contact(David)"},
]


def test_pools_group_values_by_intent_position_and_script() -> None:
    pools = value_pools(RECORDS)
    assert pools[("call_contact", 0, "latin")] == ["David", "Olivia"]
    assert pools[("call_contact", 0, "zh")] == ["张伟", "李娜"]
    assert pools[("send_message", 1, "latin")] == ["I'll be late", "dinner is ready"]


def test_substitution_swaps_the_argument_in_text_and_answer_alike() -> None:
    pools = value_pools(RECORDS)
    new = substitute(RECORDS[0], pools, random.Random(0))
    assert new is not None
    assert new["text"] == "Ring Olivia a call"
    assert new["output"] == "call_contact(Olivia)"
    assert new["params"] == ["Olivia"] and new["id"] != "a"
    chinese = substitute(RECORDS[2], pools, random.Random(0))
    assert chinese is not None and chinese["text"] == "给李娜打个电话" and chinese["output"] == "call_contact(李娜)"


def test_every_argument_of_a_call_is_swapped_and_the_answer_stays_parseable() -> None:
    pools = value_pools(RECORDS)
    new = substitute(RECORDS[4], pools, random.Random(0))
    assert new is not None
    (call,) = parse_calls(new["output"])
    assert call.args == ("Tom", "dinner is ready")
    assert new["text"] == "Text Tom that dinner is ready"


def test_records_without_a_swappable_argument_get_no_copy() -> None:
    pools = value_pools(RECORDS)
    assert substitute(RECORDS[6], pools, random.Random(0)) is None  # no arguments
    # the only value of its parameter: nothing to swap it for
    lonely = [{"id": "x", "text": "Call Ann", "output": "call_contact(Ann)"}]
    assert substitute(lonely[0], value_pools(lonely), random.Random(0)) is None


def test_copies_are_reproducible_and_keep_the_originals_out() -> None:
    first = substituted_copies(RECORDS, 2, seed=3)
    again = substituted_copies(RECORDS, 2, seed=3)
    assert first == again
    assert substituted_copies(RECORDS, 0, seed=3) == []
    originals = {(r["text"], r["output"]) for r in RECORDS}
    assert all((r["text"], r["output"]) not in originals for r in first)
    assert len({r["id"] for r in first}) == len(first)
    for record in first:
        for arg in parse_calls(record["output"])[0].args:
            assert arg in record["text"]


def test_a_shared_pool_draws_from_every_intent_in_the_same_script() -> None:
    pools = value_pools(RECORDS, shared=True)
    assert pools[("", -1, "zh")] == ["张伟", "李娜"]
    assert "dinner is ready" in pools[("", -1, "latin")] and "David" in pools[("", -1, "latin")]
    texts = {substitute(RECORDS[0], pools, random.Random(seed), shared=True)["text"] for seed in range(40)}
    assert any("dinner is ready" in text or "I'll be late" in text for text in texts)
    assert not any("张伟" in text for text in texts)


def test_similar_length_keeps_a_short_value_short() -> None:
    """A name is swapped for another name-sized value of any intent, not for a sentence-long message."""
    pools = value_pools(RECORDS, shared=True)
    texts = {
        substitute(RECORDS[0], pools, random.Random(seed), shared=True, similar_length=True)["text"]
        for seed in range(40)
    }
    assert texts == {"Ring Olivia a call"}  # David (5 characters): Olivia (6); not Tom, Grandma or a message
    long_value = {
        "id": "m",
        "text": "Tell Ann that the cat is fed now",
        "output": "send_message(Ann,the cat is fed now)",
    }
    lone = substitute(long_value, value_pools([*RECORDS, long_value], shared=True), random.Random(0), True, True)
    assert lone is not None and "the cat is fed now" not in lone["text"]  # nothing that long: any value of the pool
