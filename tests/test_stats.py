"""icai_core.stats against hand computation on real preference data."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from icai_core.stats import (
    STATS_COLUMNS,
    bh_qvalues,
    binom_two_sided_p,
    bootstrap_ci,
    encode_preferred,
    principle_stats,
    resolve_principles,
    wilson_ci,
    wilson_interval,
)

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [os.environ.get("PRINCIPIA_DATA_DIR", ""), REPO.parent / "shared" / "data"]
DATA = next((Path(p) for p in _CANDIDATES if p and (Path(p) / "prd_lfqa_expert.csv").exists()), None)
needs_data = pytest.mark.skipif(DATA is None, reason="real data (shared/data) not found")
LABELS = {"text_a": "a", "text_b": "b", "tie": "tie"}
Z = 1.959963984540054


def load(name: str, nrows: int | None = None) -> pd.DataFrame:
    df = pd.read_csv(DATA / name, keep_default_na=False, nrows=nrows)
    df["preferred"] = df["preferred_text"].map(LABELS)
    return df


def length_vote(a: str, b: str) -> int:
    """Plain-Python length principle: the longer response, unless within 10 % of the longer one."""
    la, lb = len(a), len(b)
    if abs(la - lb) <= 0.1 * max(la, lb):
        return 0
    return 1 if la > lb else -1


def bullet_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith(("- ", "* ", "1.")))


def simple_votes(df: pd.DataFrame) -> pd.DataFrame:
    length = [length_vote(a, b) for a, b in zip(df["text_a"], df["text_b"], strict=True)]
    bullets = [
        int(np.sign(bullet_count(a) - bullet_count(b)))
        for a, b in zip(df["text_a"], df["text_b"], strict=True)
    ]
    return pd.DataFrame(
        {"length": length, "bullets": bullets, "shorter": [-v for v in length]}, index=df.index
    ).astype(np.int8)


# ----------------------------------------------------------------------------------------------
# hand computation on 12 real rows
# ----------------------------------------------------------------------------------------------


@needs_data
def test_hand_computation_on_12_real_lfqa_rows():
    df = load("prd_lfqa_expert.csv", nrows=12)
    votes = simple_votes(df)[["length"]]

    agree = disagree = irrelevant = 0
    scores = []
    for a, b, pref in zip(df["text_a"], df["text_b"], df["preferred"], strict=True):
        v = length_vote(a, b)
        y = 1 if pref == "a" else -1
        if v == 0:
            irrelevant += 1
            scores.append(0)
        elif v == y:
            agree += 1
            scores.append(1)
        else:
            disagree += 1
            scores.append(-1)
    # the slice was chosen because it has all three outcomes
    assert (agree, disagree, irrelevant) == (9, 2, 1)

    row = principle_stats(votes, df["preferred"]).set_index("key").loc["length"]
    n, rel = 12, agree + disagree
    assert row["n"] == n and row["n_ties"] == 0
    assert row["n_relevant"] == rel and row["n_agree"] == agree and row["n_disagree"] == disagree
    assert row["relevance"] == pytest.approx(rel / n)
    acc = agree / rel
    assert row["accuracy"] == pytest.approx(acc)
    assert row["kappa"] == pytest.approx(2 * acc - 1)
    assert row["strength"] == pytest.approx((agree - disagree) / n)
    assert row["strength"] == pytest.approx(row["relevance"] * row["kappa"])

    # Wilson score interval, written out
    centre = (acc + Z**2 / (2 * rel)) / (1 + Z**2 / rel)
    half = Z / (1 + Z**2 / rel) * math.sqrt(acc * (1 - acc) / rel + Z**2 / (4 * rel**2))
    assert row["accuracy_ci_low"] == pytest.approx(centre - half)
    assert row["accuracy_ci_high"] == pytest.approx(centre + half)

    # normal interval of the mean of the per-pair scores (sample sd)
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    assert row["strength_ci_low"] == pytest.approx(max(-1.0, mean - Z * sd / math.sqrt(n)))
    assert row["strength_ci_high"] == pytest.approx(min(1.0, mean + Z * sd / math.sqrt(n)))

    # exact binomial test against 0.5
    assert row["p_value"] == pytest.approx(sps.binomtest(agree, rel, 0.5).pvalue)
    # a single principle: BH leaves the p-value unchanged
    assert row["q_value"] == pytest.approx(row["p_value"])
    assert bool(row["significant"]) == (row["q_value"] < 0.05)
    assert row["direction"] == ("rewards" if row["significant"] else "no evidence")


@needs_data
def test_ties_are_excluded_and_counted_on_real_vicuna_rows():
    df = load("prd_vicuna80_human_vs_gpt4.csv", nrows=40)
    votes = simple_votes(df)
    n_ties = sum(p == "tie" for p in df["preferred"])
    assert n_ties > 0
    agree = sum(
        1
        for v, p in zip(votes["length"], df["preferred"], strict=True)
        if p != "tie" and v != 0 and v == (1 if p == "a" else -1)
    )
    disagree = sum(
        1
        for v, p in zip(votes["length"], df["preferred"], strict=True)
        if p != "tie" and v != 0 and v != (1 if p == "a" else -1)
    )
    row = principle_stats(votes, df["preferred"]).set_index("key").loc["length"]
    assert row["n_ties"] == n_ties
    assert row["n"] == len(df) - n_ties
    assert (row["n_agree"], row["n_disagree"]) == (agree, disagree)
    assert row["strength"] == pytest.approx((agree - disagree) / (len(df) - n_ties))


def test_bh_hand_computed_four_p_values():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 -> p*m/rank = 0.04, 0.06, 0.0533.., 0.20 -> running min from the top
    expected = [0.04, 0.16 / 3, 0.16 / 3, 0.20]
    assert bh_qvalues(p) == pytest.approx(expected)
    with_nan = bh_qvalues([0.01, np.nan, 0.04, 0.03, 0.20])
    assert np.isnan(with_nan[1])
    assert np.delete(with_nan, 1) == pytest.approx(expected)
    assert np.isnan(bh_qvalues([np.nan, np.nan])).all()
    assert bh_qvalues([]).shape == (0,)


def test_bh_matches_scipy_and_is_monotone():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=60), rng.uniform(0, 0.01, size=20)])
    q = bh_qvalues(p)
    assert q == pytest.approx(sps.false_discovery_control(p, method="bh"))
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= -1e-15)
    assert np.all(q >= p - 1e-15) and np.all(q <= 1)


def test_binomial_p_matches_binomtest():
    for n in (1, 2, 7, 12, 25, 100, 301):
        for k in sorted({0, 1, n // 3, n // 2, (n + 1) // 2, n - 1, n}):
            if 0 <= k <= n:
                assert binom_two_sided_p(k, n) == pytest.approx(sps.binomtest(k, n, 0.5).pvalue, rel=1e-9)
    assert np.isnan(binom_two_sided_p(0, 0))


def test_wilson_matches_formula_and_nan_for_empty():
    lo, hi = wilson_ci(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert lo[0] == 0 and hi[2] == pytest.approx(1)
    assert lo[1] == pytest.approx(0.2365931, abs=1e-6) and hi[1] == pytest.approx(0.7634069, abs=1e-6)
    lo, hi = wilson_ci(0, 0)
    assert np.isnan(lo) and np.isnan(hi)
    lo, hi = wilson_interval(5, 10)
    assert isinstance(lo, float) and lo == pytest.approx(0.2365931, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# table contract
# ----------------------------------------------------------------------------------------------


@needs_data
def test_columns_sorting_directions_and_texts_on_real_data():
    df = load("alpacaeval1_gpt4_judge.csv")
    votes = simple_votes(df)
    principles = [
        SimpleNamespace(key="length", text="Select the response that is longer.", inverse_text="x"),
        {"key": "shorter", "text": "Select the response that is shorter."},
    ]
    table = principle_stats(votes, df["preferred"], principles)
    assert list(table.columns) == STATS_COLUMNS + ["n_invalid"]
    assert table["strength"].is_monotonic_decreasing
    by_key = table.set_index("key")
    # GPT-4 (AlpacaEval 1.0) rewards length; the negated principle is penalised symmetrically
    assert by_key.loc["length", "direction"] == "rewards"
    assert by_key.loc["shorter", "direction"] == "penalises"
    assert by_key.loc["shorter", "strength"] == pytest.approx(-by_key.loc["length", "strength"])
    assert by_key.loc["length", "text"] == "Select the response that is longer."
    assert by_key.loc["bullets", "text"] == "bullets"  # no text given: the key
    assert table["n"].eq(len(df)).all()
    # q-values are BH over the principles' p-values
    assert table["q_value"].to_numpy() == pytest.approx(bh_qvalues(table["p_value"].to_numpy()))


def test_no_relevant_votes_gives_nan_p_and_no_evidence():
    votes = pd.DataFrame({"never": [0, 0, 0, 0], "always": [1, 1, -1, 1]}, dtype=np.int8)
    table = principle_stats(votes, ["a", "a", "b", "tie"]).set_index("key")
    never = table.loc["never"]
    assert never["n_relevant"] == 0 and never["relevance"] == 0 and never["strength"] == 0
    assert np.isnan(never["accuracy"]) and np.isnan(never["p_value"]) and np.isnan(never["q_value"])
    assert not never["significant"] and never["direction"] == "no evidence"
    assert table.loc["always", "n"] == 3 and table.loc["always", "n_ties"] == 1
    assert table.loc["always", "accuracy"] == 1.0


def test_preferred_forms_and_alignment():
    votes = pd.DataFrame({"p": [1, -1, 0, 1]}, index=[10, 11, 12, 13], dtype=np.int8)
    labels = pd.Series(["a", "b", "tie", "b"], index=[10, 11, 12, 13])
    base = principle_stats(votes, labels)
    shuffled = labels.iloc[[3, 1, 0, 2]]  # same labels, other order: aligned on the index
    pd.testing.assert_frame_equal(principle_stats(votes, shuffled), base)
    pd.testing.assert_frame_equal(principle_stats(votes, np.array([1, -1, 0, -1])), base)
    pd.testing.assert_frame_equal(principle_stats(votes, ["text_a", "text_b", "tie", "text_b"]), base)
    with pytest.raises(ValueError, match="not one of"):
        encode_preferred(["a", "maybe"])
    with pytest.raises(ValueError, match="labels"):
        principle_stats(votes, ["a", "b"])
    with pytest.raises(ValueError):
        principle_stats(pd.DataFrame({"p": [2, 0]}), ["a", "b"])


def test_resolve_principles_forms():
    got = resolve_principles({"k": "Select the response that is concise."})
    assert got["k"].inverse_text == "Select the response other than the one that is concise."
    got = resolve_principles([SimpleNamespace(key="k", text="T", inverse_text="I")])
    assert (got["k"].text, got["k"].inverse_text) == ("T", "I")


@needs_data
def test_bootstrap_close_to_normal_interval_on_real_data():
    df = load("alpacaeval1_gpt4_judge.csv")
    votes = simple_votes(df)
    table = principle_stats(votes, df["preferred"]).set_index("key")
    boot = bootstrap_ci(votes, df["preferred"], n_boot=4000, seed=3).set_index("key")
    for key in votes.columns:
        assert boot.loc[key, "strength_boot_low"] == pytest.approx(
            table.loc[key, "strength_ci_low"], abs=0.01
        )
        assert boot.loc[key, "strength_boot_high"] == pytest.approx(
            table.loc[key, "strength_ci_high"], abs=0.01
        )
        assert boot.loc[key, "accuracy_boot_low"] == pytest.approx(
            table.loc[key, "accuracy_ci_low"], abs=0.015
        )


def test_fast_on_50k_pairs_40_principles():
    rng = np.random.default_rng(0)
    votes = pd.DataFrame(
        rng.integers(-1, 2, size=(50_000, 40)).astype(np.int8), columns=[f"p{i}" for i in range(40)]
    )
    preferred = pd.Series(rng.choice(np.array(["a", "b", "tie"], dtype=object), size=50_000))
    start = time.perf_counter()
    table = principle_stats(votes, preferred)
    assert time.perf_counter() - start < 1.0
    assert len(table) == 40
