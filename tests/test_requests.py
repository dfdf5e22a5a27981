"""The agent's memory of recent answers (retries get the first answer, never a second run)."""

from __future__ import annotations

from wwwserve.agent.requests import RequestRegistry


def test_recent_answers_are_bounded_and_forget_the_oldest_first() -> None:
    reg = RequestRegistry(keep=16)
    for i in range(1000):
        reg.remember(f"r{i}", f"answer {i}".encode(), {"n": str(i)})
    assert reg.recent("r999") == (b"answer 999", {"n": "999"})
    assert all(reg.recent(f"r{i}") is not None for i in range(984, 1000))  # the last `keep` stay
    assert reg.recent("r0") is None and reg.recent("r900") is None
    assert len(reg._recent) <= 16 + 16 // 8


def test_a_remembered_answer_expires() -> None:
    reg = RequestRegistry(ttl_s=-1.0)  # already expired when stored
    reg.remember("r", b"x", {})
    assert reg.recent("r") is None
