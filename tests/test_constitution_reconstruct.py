"""Constitution selection and held-out reconstruction on real preference data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from icai_core.constitution import Constitution, ConstitutionEntry, build_constitution
from icai_core.reconstruct import METHODS, RESULT_COLUMNS, audit_split, evaluate, split_train_test
from icai_core.stats import principle_stats
from tests.support.realvotes import load, needs_data, simple_votes

pytestmark = needs_data

PRINCIPLES = [
    SimpleNamespace(
        key="length",
        text="Select the response that is longer.",
        inverse_text="Select the response that is shorter.",
    ),
    SimpleNamespace(
        key="shorter",
        text="Select the response that is shorter.",
        inverse_text="Select the response that is longer.",
    ),
    SimpleNamespace(
        key="bullets",
        text="Select the response that uses more bullet points.",
        inverse_text="Select the response that uses fewer bullet points.",
    ),
    SimpleNamespace(
        key="questions",
        text="Select the response that asks more questions.",
        inverse_text="Select the response that asks fewer questions.",
    ),
]


@pytest.fixture(scope="module")
def alpaca1():
    df = load("alpacaeval1_gpt4_judge.csv")
    return df, simple_votes(df)


@pytest.fixture(scope="module")
def vicuna():
    df = load("prd_vicuna80_human_vs_gpt4.csv")
    return df, simple_votes(df)


# ----------------------------------------------------------------------------------------------
# split
# ----------------------------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_stratified_with_ties(vicuna):
    df, _ = vicuna
    y = df["preferred"]
    tr, te = split_train_test(y, test_size=0.3, seed=7)
    tr2, te2 = split_train_test(y, test_size=0.3, seed=7)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    tr3, _ = split_train_test(y, test_size=0.3, seed=8)
    assert not np.array_equal(tr, tr3)
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(df)))
    assert len(te) == round(0.3 * len(df))
    # every label, ties included, is split in the same proportion (largest-remainder rounding)
    for label in ("a", "b", "tie"):
        n_label = int((y == label).sum())
        n_test_label = int((y.iloc[te] == label).sum())
        assert abs(n_test_label - 0.3 * n_label) <= 1, label
    assert (y.iloc[te] == "tie").sum() > 0 and (y.iloc[tr] == "tie").sum() > 0


def test_unstratified_split_is_seeded(vicuna):
    df, _ = vicuna
    a = split_train_test(df["preferred"], test_size=0.25, seed=1, stratify=False)
    b = split_train_test(df["preferred"], test_size=0.25, seed=1, stratify=False)
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) == round(0.25 * len(df))


# ----------------------------------------------------------------------------------------------
# constitution
# ----------------------------------------------------------------------------------------------


def test_build_constitution_inverts_penalised_and_round_trips(alpaca1):
    df, votes = alpaca1
    stats = principle_stats(votes, df["preferred"], PRINCIPLES)
    con = build_constitution(stats, principles=PRINCIPLES)
    by_key = {e.key: e for e in con}
    # "shorter" is significantly penalised -> enters with its inverse wording, inverted
    assert by_key["shorter"].inverted and by_key["shorter"].text == "Select the response that is longer."
    assert by_key["shorter"].strength > 0 and by_key["shorter"].original_strength < 0
    assert not by_key["length"].inverted
    assert [abs(e.strength) for e in con] == sorted((abs(e.strength) for e in con), reverse=True)
    assert all(e.q_value < 0.05 and e.relevance >= 0.05 for e in con)
    lines = con.text().splitlines()
    assert lines[0].startswith("1. Select the response that ")
    assert len(lines) == len(con)
    # negated votes when used
    signed = con.signed_votes(votes)
    np.testing.assert_array_equal(signed["shorter"].to_numpy(), votes["length"].to_numpy())
    # JSON round trip
    again = Constitution.from_dict(json.loads(json.dumps(con.to_dict())))
    assert again == con
    # filters
    assert len(build_constitution(stats, principles=PRINCIPLES, max_size=1)) == 1
    assert len(build_constitution(stats, min_relevance=0.99)) == 0
    assert build_constitution(stats, min_relevance=0.99).text() == ""


def test_require_significant_false_keeps_weak_principles():
    stats = principle_stats(
        pd.DataFrame({"weak": [1, -1, 1, -1, 1, 0, 0, 0, 0, 0]}, dtype=np.int8), ["a", "a", "a", "b", "b"] * 2
    )
    assert not stats["significant"].any()
    assert len(build_constitution(stats)) == 0
    loose = build_constitution(stats, require_significant=False, min_abs_strength=0.0)
    assert loose.keys == ["weak"]


# ----------------------------------------------------------------------------------------------
# reconstruction
# ----------------------------------------------------------------------------------------------


def test_gpt4_judge_rewards_length_and_length_reconstructs_it(alpaca1):
    df, votes = alpaca1
    train_stats, con, result = audit_split(votes, df["preferred"], PRINCIPLES, seed=0)
    row = train_stats.set_index("key").loc["length"]
    # GPT-4 as AlpacaEval 1.0 judge rewards longer answers (known verbosity bias): ~0.62 strength
    assert row["significant"] and row["direction"] == "rewards" and row["strength"] > 0.5
    assert con.entries[0].key in {"length", "shorter"}  # the length principle (either wording) leads

    table = result.table.set_index("method")
    assert list(result.table.columns) == RESULT_COLUMNS
    assert list(result.table["method"]) == METHODS
    for method in ("weighted_majority", "logistic_regression", "best_single_principle"):
        assert table.loc[method, "ci_low"] > table.loc["majority_class", "ci_high"], method
        assert table.loc[method, "agreement"] > 0.75
    assert 0.45 < table.loc["majority_class", "agreement"] < 0.55  # labels are ~50/50
    assert table.loc["random_guess", "ci_low"] < 0.5 < table.loc["random_guess", "ci_high"]
    assert table["n_test"].eq(result.n_test).all()
    assert result.n_test + result.n_test_ties == len(result.test_index)
    assert result.best_principle in {"length", "shorter"}
    assert len(result.random_constitution_agreements) == 20


def test_no_leakage_test_labels_do_not_change_selection_or_fit(alpaca1):
    df, votes = alpaca1
    y = df["preferred"].to_numpy(dtype=object)
    tr, te = split_train_test(y, test_size=0.3, seed=3)
    stats1, con1, res1 = audit_split(votes, y, PRINCIPLES, train_index=tr, test_index=te, seed=3)

    shuffled = y.copy()
    shuffled[te] = np.random.default_rng(0).permutation(y[te])
    flipped = y.copy()
    flipped[te] = np.where(y[te] == "a", "b", "a")  # adversarial: every test label reversed
    for poisoned in (shuffled, flipped):
        stats2, con2, res2 = audit_split(votes, poisoned, PRINCIPLES, train_index=tr, test_index=te, seed=3)
        pd.testing.assert_frame_equal(stats1, stats2)
        assert con1.to_dict() == con2.to_dict()
        pd.testing.assert_series_equal(res1.weights, res2.weights)
        pd.testing.assert_series_equal(res1.logistic_coef, res2.logistic_coef)
        assert res1.best_principle == res2.best_principle
        assert res1.majority_label == res2.majority_label
        methods = ["logistic_regression", "weighted_majority", "best_single_principle", "majority_class"]
        pd.testing.assert_frame_equal(res1.predictions[methods], res2.predictions[methods])
    # ... while the scores do use the test labels: reversing them reverses the agreement
    assert res2.agreement("weighted_majority") == pytest.approx(1 - res1.agreement("weighted_majority"))
    # the statistics behind the constitution are those of the train rows only
    assert stats1["n"].iloc[0] == len(tr)
    pd.testing.assert_frame_equal(stats1, principle_stats(votes.iloc[tr], y[tr], PRINCIPLES))


def test_ties_excluded_from_agreement_and_constitution_forms(vicuna):
    df, votes = vicuna
    y = df["preferred"]
    tr, te = split_train_test(y, seed=0)
    con = Constitution(
        [
            ConstitutionEntry("length", "Select the response that is longer.", 0.1, 0.6, 0.8, 0.01, False),
            ConstitutionEntry(
                "questions", "Select the response that asks fewer questions.", 0.02, 0.6, 0.1, 0.04, True
            ),
        ]
    )
    res = evaluate(votes, y, con, train_index=tr, test_index=te)
    assert res.n_test_ties == int((y.iloc[te] == "tie").sum()) > 0
    assert res.n_test == len(te) - res.n_test_ties
    assert res.n_train_ties == int((y.iloc[tr] == "tie").sum())
    assert len(res.predictions) == res.n_test
    assert res.constitution_signs == {"length": 1, "questions": -1}
    for other in ({"length": 1, "questions": -1}, [("length", 1), ("questions", -1)]):
        pd.testing.assert_frame_equal(
            evaluate(votes, y, other, train_index=tr, test_index=te).table, res.table
        )
    assert evaluate(votes, y, ["length"], train_index=tr, test_index=te).constitution_signs == {"length": 1}
    with pytest.raises(ValueError, match="overlap"):
        evaluate(votes, y, con, train_index=tr, test_index=np.concatenate([te, tr[:1]]))
    with pytest.raises(KeyError):
        evaluate(votes, y, ["no_such_principle"], train_index=tr, test_index=te)


def test_empty_constitution_falls_back_to_majority(alpaca1):
    df, votes = alpaca1
    res = evaluate(votes, df["preferred"], Constitution(), seed=0)
    table = res.table.set_index("method")
    assert table.loc["logistic_regression", "agreement"] == table.loc["majority_class", "agreement"]
    assert table.loc["weighted_majority", "agreement"] == table.loc["majority_class", "agreement"]
    assert np.isnan(table.loc["random_constitution", "agreement"])
    # without a constitution the best single principle is chosen among all principles
    assert res.best_principle in {"length", "shorter"}


def test_grouped_split_keeps_each_pair_on_one_side():
    """alpacaeval_human_vs_gpt4: 9 annotators judged each of 521 pairs; no pair may straddle the split."""
    from icai_core.reconstruct import content_groups

    df = load("alpacaeval_human_vs_gpt4.csv")
    groups = content_groups(df)
    assert len(set(groups)) == df["pair_id"].nunique() == 521
    train, test = split_train_test(df["preferred"], test_size=0.3, seed=0, groups=groups)
    assert len(train) + len(test) == len(df) and set(train).isdisjoint(test)
    assert set(df["pair_id"].iloc[train]).isdisjoint(df["pair_id"].iloc[test])
    assert abs(len(test) / len(df) - 0.3) < 0.02
    # without repeated ids the grouped split is exactly the plain one
    single = load("prd_lfqa_expert.csv").drop_duplicates(["prompt", "text_a", "text_b"]).reset_index(drop=True)
    plain = split_train_test(single["preferred"], seed=3)
    grouped = split_train_test(single["preferred"], seed=3, groups=content_groups(single))
    assert all((a == b).all() for a, b in zip(plain, grouped, strict=True))
