"""icai_core.answers: parsing and recovery of model answers, on the raw answers real models gave.

The raw answers are quoted from issue 14 (Qwen2.5-Coder-0.5B on llama.cpp) or built the way a small
model fails (cut off at max_tokens, repeating a list, prose instead of JSON). Expected values are
written out by hand, not computed by the code under test.
"""

from __future__ import annotations

import pytest

from icai_core import prompts
from icai_core.answers import (
    StageCounts,
    StageFailed,
    check_stage,
    parse_annotation,
    parse_list,
    parse_oracle,
    parse_principle,
    parse_proposals,
    parse_votes,
)
from icai_core.llm import parse_json_answer

# issue 14, verbatim: one principle in the batch, the model copied the example and was cut off
TRUNCATED_VOTES = '{"votes": {"1": "A", "2": "None", "3": "B", "4": "A", "5": "B", "6": "A", "'


# ---------------------------------------------------------------------------- votes
def test_truncated_votes_from_issue_14_are_recovered():
    assert parse_votes(TRUNCATED_VOTES, 1, "length") == ([1], ["recovered"])
    # a batch of 8: six complete entries (1..6) recovered, the cut-off 7th and the missing 8th invalid
    votes, status = parse_votes(TRUNCATED_VOTES, 8, "length")
    assert votes[:6] == [1, 0, -1, 1, -1, 1]
    assert status == ["recovered"] * 6 + ["invalid"] * 2


def test_complete_votes_valid_extra_entries_ignored_garbled_invalid():
    text = '{"votes": {"1": "A", "2": "B", "3": "None", "4": "maybe", "7": "A"}}'
    assert parse_votes(text, 5) == ([1, -1, 0, 0, 0], ["valid", "valid", "valid", "invalid", "invalid"])
    # the copied example of the old prompt, for a batch of one: entry 1 is read, 2.. are beyond n
    assert parse_votes('{"votes": {"1": "A", "2": "None", ...}}', 1) == ([1], ["recovered"])
    # complete JSON but finish_reason length (the cut fell after the object): recovered, not valid
    assert parse_votes('{"votes": {"1": "B"}} and then some', 1, "length") == ([-1], ["recovered"])


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ('```json\n{"votes": {"1": "a", "2": "Response B"}}\n```', 2, ([1, -1], ["valid", "valid"])),
        ('{"votes": ["A", "B", "None"]}', 3, ([1, -1, 0], ["valid", "valid", "valid"])),
        ('{"1": "B", "2": "A"}', 2, ([-1, 1], ["valid", "valid"])),  # wrapper left out
        ('{"votes": {"1": null}}', 1, ([0], ["valid"])),
        ("1: A\n2: none\n3. B", 3, ([1, 0, -1], ["recovered"] * 3)),  # plain text (no JSON mode)
        ("1. A good response is short\n2. B", 2, ([0, -1], ["invalid", "recovered"])),  # prose is not a vote
        ('{"votes": {"1": "A", "2": "No', 2, ([1, 0], ["recovered", "invalid"])),
        ('{"votes": {"1": <vote>}}', 1, ([0], ["invalid"])),  # the new skeleton, copied: invalid
        ("I cannot decide.", 2, ([0, 0], ["invalid", "invalid"])),
        ("", 1, ([0], ["invalid"])),
        (None, 2, ([0, 0], ["invalid", "invalid"])),
    ],
)
def test_vote_shapes(text, n, expected):
    assert parse_votes(text, n) == expected


# ---------------------------------------------------------------------------- proposals
def test_repeated_proposal_list_cut_off_keeps_distinct_complete_items():
    # a proposer that repeated itself to its token limit (issue 14: "repeated itself to its 300-token limit")
    item = '"Select the response that is more concise"'
    text = '{"principles": [' + ", ".join([item] * 9 + ['"Select the response that uses a pol'])
    got = parse_proposals(text, 3, "length")
    assert got.status == "recovered"
    assert got.value == ["Select the response that is more concise"]
    assert "8 repeated" in got.detail


def test_proposals_phrasing_dedup_and_limit():
    text = ('{"principles": ["is polite", "Select the response that is polite.", '
            '"The response that uses lists", "avoids jargon", "cites sources"]}')
    got = parse_proposals(text, 3)
    assert got.value == ["Select the response that is polite", "Select the response that uses lists",
                         "Select the response that avoids jargon"]
    assert got.status == "recovered"  # a repeated item was dropped


def test_proposals_placeholder_copy_is_invalid_and_plain_text_recovered():
    assert parse_proposals('{"principles": ["Select the response that ..."]}', 3).status == "invalid"
    got = parse_proposals("Here are principles:\n1. Select the response that is short\n2. uses examples", 3)
    assert got.status == "recovered"
    assert got.value == ["Select the response that is short", "Select the response that uses examples"]
    assert parse_proposals("", 3).status == "invalid"
    assert parse_proposals('{"principles": []}', 3).status == "invalid"


def test_parse_list_for_imperative_principles():
    got = parse_list('{"principles": ["Decline harmful requests.", "Explain why."]}', 5)
    assert (got.value, got.status) == (["Decline harmful requests.", "Explain why."], "valid")
    got = parse_list('{"principles": ["Decline harmful requests.", "Expl', 5, finish_reason="length")
    assert (got.value, got.status) == (["Decline harmful requests."], "recovered")


def test_merged_principle():
    assert parse_principle('{"principle": "is concise"}').value == "Select the response that is concise"
    got = parse_principle('{"principle": "Select the response that is concise", "x')
    assert (got.value, got.status) == ("Select the response that is concise", "recovered")
    assert parse_principle("nothing").status == "invalid"


# ---------------------------------------------------------------------------- annotation, oracle
@pytest.mark.parametrize(
    ("text", "swap", "value", "status"),
    [
        ('{"preferred": "A"}', False, "a", "valid"),
        ('{"preferred": "A"}', True, "b", "valid"),
        ('{"preferred": "B"', False, "b", "recovered"),
        ("Response B", False, "b", "recovered"),
        ("B.", True, "a", "recovered"),
        ('{"preferred": "both"}', False, None, "invalid"),
        ("A is better than B", False, None, "invalid"),
        ("", False, None, "invalid"),
    ],
)
def test_annotation(text, swap, value, status):
    got = parse_annotation(text, swap=swap)
    assert (got.value, got.status) == (value, status)


def test_cut_off_oracle_reason_keeps_the_verdict():
    # issue 14: oracle answers cut off at 120 tokens mid-"reason"
    got = parse_oracle('{"flagged": true, "reason": "The reply gives step-by-step instructions for', "length")
    assert got.status == "recovered"
    assert got.value == (True, "The reply gives step-by-step instructions for [cut off]")
    assert parse_oracle('{"flagged": false, "reason": "declines"}').value == (False, "declines")
    # no readable verdict: invalid, never "not flagged"
    for text in ('{"reason": "The reply is', '{"flagged": "maybe"}', "", None):
        got = parse_oracle(text)
        assert got.status == "invalid" and got.value is None


# ---------------------------------------------------------------------------- stage accounting
def test_stage_counts_and_thresholds():
    counts = StageCounts()
    for s in ["valid"] * 7 + ["recovered"]:
        counts.add(s)
    counts.add("invalid", TRUNCATED_VOTES)
    counts.add("invalid", "second example is not kept")
    assert counts.to_dict() == {"valid": 7, "recovered": 1, "invalid": 2, "total": 10, "invalid_rate": 0.2}
    assert check_stage("vote", counts) is None  # 20% is not above the 20% warning threshold
    counts.add("invalid")
    warning = check_stage("vote", counts)
    assert warning and "3 of 11" in warning and "27%" in warning
    with pytest.raises(ValueError):
        counts.add("fine")


def test_stage_failed_says_what_the_model_returned_and_what_to_try():
    counts = StageCounts()
    for _ in range(30):
        counts.add("invalid", "x" * 500)
    with pytest.raises(StageFailed) as info:
        check_stage("vote", counts)
    msg = str(info.value)
    assert "30 of 30" in msg and "100%" in msg
    assert "larger model" in msg and "JSON schema" in msg and "smaller batch" in msg
    assert "x" * 200 in msg and "x" * 201 not in msg  # the example is cut to 200 characters
    assert info.value.stage == "vote" and isinstance(info.value, RuntimeError)
    assert check_stage("vote", StageCounts()) is None


# ---------------------------------------------------------------------------- prompts
def test_vote_prompt_has_no_copyable_example_and_says_exactly_n():
    for n in (1, 3):
        batch = [f"Select the response that is rule {j}" for j in range(n)]
        msgs = prompts.vote_messages("p", "a", "b", batch)
        text = msgs[0]["content"] + msgs[1]["content"]
        assert f"exactly {n} entr" in text
        assert '"1": "A"' not in text and '"2": "None"' not in text  # the example a 0.5B model copied
        skeleton = text[text.index('{"votes"'):]
        assert parse_json_answer(skeleton) is None  # a copied skeleton does not parse as votes
        assert skeleton.count("<vote>") == n
    # the old call (numbered text, no n) derives the batch size
    old = prompts.VOTE.messages(prompt="p", text_a="a", text_b="b", principles=prompts.numbered(["x", "y"]))
    assert "exactly 2 entries" in old[1]["content"]


def test_schemas_and_budgets():
    s = prompts.vote_schema(3)["schema"]["properties"]["votes"]
    assert s["required"] == ["1", "2", "3"] and s["properties"]["2"]["enum"] == ["A", "B", "None"]
    assert prompts.proposal_schema(3)["schema"]["properties"]["principles"]["maxItems"] == 3
    assert prompts.oracle_schema()["schema"]["required"] == ["flagged", "reason"]
    assert prompts.annotation_schema()["schema"]["properties"]["preferred"]["enum"] == ["A", "B"]
    # the 40-token budget of issue 14 for one principle now has a real margin
    assert prompts.vote_max_tokens(1) == 2 * (8 + 12) + 32 == 72
    assert prompts.oracle_max_tokens() > 120
