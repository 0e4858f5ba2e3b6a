"""Intake of real preference data: the shared CSVs, and real rows re-expressed in other formats.

Every input here is built from REAL rows of the shared data set (see ../shared/data/README.md):
rows are converted into the source formats the loader recognises (AlpacaEval annotations.json,
Chatbot Arena, Kaggle Arena, HH-RLHF chosen/rejected, TSV, JSON, JSONL, Parquet) and the round trip
must give back the same texts and preferences. The expected values come from pandas' own CSV
reader, not from icai_core.data.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icai_core import data as D
from icai_core.data import ColumnMapping, load_pairs

# file: (rows, share a %, share b %, share tie %) -- the table of the shared data README
README_TABLE = {
    "alpacaeval_human_vs_gpt4.csv": (4689, 53.2, 46.8, 0.0),
    "alpacaeval2_gpt4turbo_judge.csv": (1917, 49.3, 49.8, 0.8),
    "alpacaeval1_gpt4_judge.csv": (1758, 49.8, 50.2, 0.0),
    "alpacaeval_judge_variants.csv": (1105, 50.2, 49.2, 0.5),
    "arena_llama3_70b_human.csv": (1119, 47.3, 52.7, 0.0),
    "pandalm_human_vs_judges.csv": (4970, 43.2, 47.3, 9.5),
    "prd_vicuna80_human_vs_gpt4.csv": (1920, 45.1, 43.0, 11.9),
    "prd_lfqa_expert.csv": (260, 53.8, 46.2, 0.0),
    "hh_rlhf_harmless_test.csv": (2308, 49.2, 50.8, 0.0),
    "icai_synthetic_orthogonal.csv": (30, 43.3, 56.7, 0.0),
    "icai_synthetic_aligned.csv": (30, 26.7, 73.3, 0.0),
    "icai_synthetic_mixed.csv": (60, 35.0, 65.0, 0.0),
}
LABEL = {"text_a": "a", "text_b": "b", "tie": "tie"}
FLIP = {"a": "b", "b": "a", "tie": "tie"}


def read_ref(path: Path) -> pd.DataFrame:
    """The shared CSV as pandas reads it (independent of icai_core.data)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def canon(df: pd.DataFrame) -> pd.DataFrame:
    return df[["id", "prompt", "text_a", "text_b", "preferred"]].astype(object).reset_index(drop=True)


# --------------------------------------------------------------------------- shared CSVs


@pytest.mark.parametrize("fname", sorted(README_TABLE))
def test_shared_csv_loads_with_readme_counts(shared_data, fname):
    rows, a, b, tie = README_TABLE[fname]
    res = load_pairs(shared_data / fname)
    pairs = res.pairs
    assert res.format == "principia"
    assert res.report.file_type == "csv"
    assert res.report.rows_read == res.report.rows_kept == len(pairs) == rows
    shares = pairs["preferred"].value_counts(normalize=True)
    for label, pct in (("a", a), ("b", b), ("tie", tie)):
        assert abs(100 * shares.get(label, 0.0) - pct) <= 0.05 + 1e-9, (label, shares)
    ref = read_ref(shared_data / fname)
    # texts and ids are exactly what the file holds; labels follow preferred_text
    for col in ("id", "prompt", "text_a", "text_b"):
        assert pairs[col].tolist() == ref[col].tolist()
    assert pairs["preferred"].tolist() == ref["preferred_text"].map(LABEL).tolist()
    # no source column is dropped
    for col in ref.columns:
        if col != "preferred_text":
            assert pairs[col].tolist() == ref[col].tolist(), col
    assert pairs["preferred_text"].tolist() == ref["preferred_text"].tolist()
    assert list(pairs.columns[:5]) == ["id", "prompt", "text_a", "text_b", "preferred"]
    assert isinstance(pairs.index, pd.RangeIndex)


def test_shared_csv_loads_fast(shared_data):
    path = shared_data / "alpacaeval_human_vs_gpt4.csv"  # 4.4 MB
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        load_pairs(path)
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"loading 4.4 MB took {best:.2f} s"


def test_empty_responses_are_kept_with_a_warning(shared_data):
    res = load_pairs(shared_data / "pandalm_human_vs_judges.csv")
    pairs = res.pairs
    assert ((pairs["text_a"] == "") | (pairs["text_b"] == "")).sum() == 270
    assert any(w.startswith("270 rows have one empty response (text_a: 145, text_b: 125)") for w in res.report.warnings)


def test_ties_exclude_counts_rows(shared_data):
    keep = load_pairs(shared_data / "pandalm_human_vs_judges.csv")
    excl = load_pairs(shared_data / "pandalm_human_vs_judges.csv", ties="exclude")
    assert excl.report.rows_read == 4970
    assert excl.report.rows_kept == len(excl.pairs) == 4970 - 471
    assert excl.report.excluded == {"tie (ties='exclude')": 471}
    assert (excl.pairs["preferred"] != "tie").all()
    assert isinstance(excl.pairs.index, pd.RangeIndex)
    assert excl.pairs["id"].tolist() == keep.pairs.loc[keep.pairs["preferred"] != "tie", "id"].tolist()
    assert "Excluded 471 rows: tie (ties='exclude')." in excl.report.summary()


def test_na_like_text_survives(shared_data, tmp_path):
    ref = read_ref(shared_data / "prd_lfqa_expert.csv").head(6).copy()
    ref.loc[0, "text_a"] = "NA"
    ref.loc[1, "text_b"] = "null"
    ref.loc[2, "prompt"] = "None"
    ref.loc[3, "text_a"] = "  leading and trailing spaces  \n"
    ref.loc[4, "id"] = "007"
    path = tmp_path / "na.csv"
    ref.to_csv(path, index=False)
    pairs = load_pairs(path).pairs
    assert pairs.loc[0, "text_a"] == "NA"
    assert pairs.loc[1, "text_b"] == "null"
    assert pairs.loc[2, "prompt"] == "None"
    assert pairs.loc[3, "text_a"] == "  leading and trailing spaces  \n"
    assert pairs.loc[4, "id"] == "007"


def test_utf8_bom_is_accepted(shared_data, tmp_path):
    raw = (shared_data / "icai_synthetic_aligned.csv").read_bytes()
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + raw)
    res = load_pairs(path)
    assert res.report.warnings == []
    assert canon(res.pairs).equals(canon(load_pairs(shared_data / "icai_synthetic_aligned.csv").pairs))
    assert "id" in res.pairs.columns and "\ufeffid" not in res.pairs.columns


def test_bytes_and_file_like_sources(shared_data):
    path = shared_data / "icai_synthetic_mixed.csv"
    expected = canon(load_pairs(path).pairs)
    raw = path.read_bytes()
    by_bytes = load_pairs(raw, name="mixed.csv")
    assert by_bytes.report.file_name == "mixed.csv"
    assert canon(by_bytes.pairs).equals(expected)
    with open(path, "rb") as fh:
        by_handle = load_pairs(fh)
    assert by_handle.report.file_name == "icai_synthetic_mixed.csv"
    assert canon(by_handle.pairs).equals(expected)
    sniffed = load_pairs(io.BytesIO(raw))  # no name at all: the content says CSV
    assert sniffed.report.file_type == "csv"
    assert canon(sniffed.pairs).equals(expected)
    assert canon(load_pairs(raw, fmt="csv").pairs).equals(expected)


# --------------------------------------------------------------------------- other file types


@pytest.fixture(scope="module")
def vicuna(shared_data):
    path = shared_data / "prd_vicuna80_human_vs_gpt4.csv"
    return read_ref(path), load_pairs(path).pairs


def _same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col


@pytest.mark.parametrize(("file_type", "write"), [
    ("tsv", lambda ref, path: ref.to_csv(path, sep="\t", index=False)),  # CSV quoting: multi-line texts
    ("jsonl", lambda ref, path: ref.to_json(path, orient="records", lines=True, force_ascii=False)),
])
def test_pandas_tsv_and_jsonl_round_trip(vicuna, tmp_path, file_type, write):
    ref, expected = vicuna
    path = tmp_path / f"vicuna.{file_type}"
    write(ref, path)
    res = load_pairs(path)
    assert res.report.file_type == file_type
    _same_table(res.pairs, expected)


def test_semicolon_csv_is_detected(vicuna, tmp_path):
    ref, expected = vicuna
    path = tmp_path / "vicuna_semicolon.csv"
    ref.to_csv(path, sep=";", index=False)
    res = load_pairs(path)
    _same_table(res.pairs, expected)
    assert "the file separates columns with ';', not commas; read it that way" in res.report.warnings


def test_json_records_and_columns_round_trip(vicuna, tmp_path):
    ref, expected = vicuna
    records = tmp_path / "records.json"
    records.write_text(json.dumps(ref.to_dict(orient="records"), ensure_ascii=False), encoding="utf-8")
    _same_table(load_pairs(records).pairs, expected)
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps(ref.to_dict(orient="list"), ensure_ascii=False), encoding="utf-8")
    _same_table(load_pairs(columns).pairs, expected)
    pandas_columns = tmp_path / "pandas_columns.json"  # pandas' default orient: {col: {index: value}}
    ref.to_json(pandas_columns, force_ascii=False)
    _same_table(load_pairs(pandas_columns).pairs, expected)


def test_parquet_round_trip(vicuna, tmp_path):
    ref, expected = vicuna
    path = tmp_path / "vicuna.parquet"
    ref.to_parquet(path, index=False)
    res = load_pairs(path)
    assert res.report.file_type == "parquet"
    _same_table(res.pairs, expected)
    # the same bytes without a name are recognised by their magic number
    assert canon(load_pairs(path.read_bytes()).pairs).equals(canon(expected))


def test_json_numbers_in_id_and_metadata_become_text(shared_data, tmp_path):
    ref = read_ref(shared_data / "prd_lfqa_expert.csv").head(20)
    records = ref.to_dict(orient="records")
    for i, rec in enumerate(records):
        rec["id"] = i + 1  # a numeric id, as many JSON exports have
        rec["raw_preference"] = int(rec["raw_preference"])
    path = tmp_path / "lfqa.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    pairs = load_pairs(path).pairs
    assert pairs["id"].tolist() == [str(i + 1) for i in range(20)]
    assert pairs["raw_preference"].tolist() == [int(v) for v in ref["raw_preference"]]


# --------------------------------------------------------------------------- AlpacaEval


def alpacaeval_records(ref: pd.DataFrame) -> list[dict]:
    """annotations.json records in AlpacaEval's own order (output_1 = the response listed first)."""
    out = []
    for r in ref.itertuples(index=False):
        swapped = r.swapped == "True"
        out.append({
            "instruction": r.prompt,
            "output_1": r.text_b if swapped else r.text_a,
            "generator_1": r.model_b if swapped else r.model_a,
            "output_2": r.text_a if swapped else r.text_b,
            "generator_2": r.model_a if swapped else r.model_b,
            "annotator": r.annotator,
            "preference": float(r.raw_preference),
            "dataset": r.category,
        })
    return out


def test_alpacaeval_annotations_json(shared_data, tmp_path):
    ref = read_ref(shared_data / "alpacaeval1_gpt4_judge.csv")
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(alpacaeval_records(ref), ensure_ascii=False), encoding="utf-8")
    res = load_pairs(path)
    assert res.format == "alpacaeval"
    pairs = res.pairs
    swapped = (ref["swapped"] == "True").to_numpy()
    assert pairs["prompt"].tolist() == ref["prompt"].tolist()
    assert pairs["text_a"].tolist() == np.where(swapped, ref["text_b"], ref["text_a"]).tolist()
    assert pairs["text_b"].tolist() == np.where(swapped, ref["text_a"], ref["text_b"]).tolist()
    assert pairs["model_a"].tolist() == np.where(swapped, ref["model_b"], ref["model_a"]).tolist()
    assert pairs["category"].tolist() == ref["category"].tolist()
    assert pairs["annotator"].tolist() == ref["annotator"].tolist()
    assert pairs["raw_preference"].tolist() == ref["raw_preference"].astype(float).tolist()
    expected = [FLIP[LABEL[p]] if s else LABEL[p] for p, s in zip(ref["preferred_text"], swapped, strict=True)]
    raw = ref["raw_preference"].astype(float).to_numpy()
    decided = raw != 0
    assert pairs["preferred"].to_numpy()[decided].tolist() == np.asarray(expected)[decided].tolist()
    # AlpacaEval encodes a draw as 0 (metrics treat 0 like 1.5); the shared CSV labels these 15 rows
    # with output_1 preferred, the loader reads them as ties and says so.
    assert int((~decided).sum()) == 15
    assert (pairs["preferred"].to_numpy()[~decided] == "tie").all()
    assert any(w.startswith("15 with preference 0 treated as ties") for w in res.report.warnings)


def test_alpacaeval_weighted_preferences(shared_data, tmp_path):
    ref = read_ref(shared_data / "alpacaeval2_gpt4turbo_judge.csv")
    recs = alpacaeval_records(ref)
    assert sum(not float(r["preference"]).is_integer() for r in recs) > 1000  # real continuous values
    path = tmp_path / "weighted_annotations.json"
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    pairs = load_pairs(path).pairs
    swapped = (ref["swapped"] == "True").to_numpy()
    expected = [FLIP[LABEL[p]] if s else LABEL[p] for p, s in zip(ref["preferred_text"], swapped, strict=True)]
    assert pairs["preferred"].tolist() == expected
    assert (pairs["preferred"] == "tie").sum() == 16  # the 1.5 values


def test_alpacaeval_null_preference_is_a_reported_tie(shared_data, tmp_path):
    ref = read_ref(shared_data / "alpacaeval1_gpt4_judge.csv").head(40)
    recs = alpacaeval_records(ref)
    recs[3]["preference"] = None  # as AlpacaEval stores an unparsable judge answer
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    res = load_pairs(path)
    assert res.pairs.loc[3, "preferred"] == "tie"
    assert any("1 without a preference treated as ties" in w for w in res.report.warnings)


def test_alpacaeval_columns_json(shared_data, tmp_path):
    ref = read_ref(shared_data / "alpacaeval1_gpt4_judge.csv").head(200)
    recs = alpacaeval_records(ref)
    cols = {k: [r[k] for r in recs] for k in recs[0]}
    a = tmp_path / "records.json"
    a.write_text(json.dumps(recs), encoding="utf-8")
    b = tmp_path / "columns.json"
    b.write_text(json.dumps(cols), encoding="utf-8")
    _same_table(load_pairs(a).pairs, load_pairs(b).pairs)


# --------------------------------------------------------------------------- Chatbot Arena


def arena_records(ref: pd.DataFrame, as_json_text: bool) -> list[dict]:
    out = []
    for r in ref.itertuples(index=False):
        conv_a = [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.text_a}]
        conv_b = [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.text_b}]
        out.append({
            "question_id": r.pair_id,
            "model_a": r.model_a,
            "model_b": r.model_b,
            "winner": {"text_a": "model_a", "text_b": "model_b", "tie": "tie"}[r.preferred_text],
            "conversation_a": json.dumps(conv_a, ensure_ascii=False) if as_json_text else conv_a,
            "conversation_b": json.dumps(conv_b, ensure_ascii=False) if as_json_text else conv_b,
            "turn": 1,
            "language": r.language,
        })
    return out


@pytest.mark.parametrize("container", ["json", "csv", "parquet"])
def test_arena_battles(shared_data, tmp_path, container):
    ref = read_ref(shared_data / "arena_llama3_70b_human.csv")
    if container == "json":
        path = tmp_path / "arena.json"
        path.write_text(json.dumps(arena_records(ref, False), ensure_ascii=False), encoding="utf-8")
    elif container == "csv":
        path = tmp_path / "arena.csv"
        pd.DataFrame(arena_records(ref, True)).to_csv(path, index=False)
    else:
        path = tmp_path / "arena.parquet"
        pd.DataFrame(arena_records(ref, False)).to_parquet(path, index=False)
    res = load_pairs(path)
    assert res.format == "arena"
    pairs = res.pairs
    assert pairs["prompt"].tolist() == ref["prompt"].tolist()
    assert pairs["text_a"].tolist() == ref["text_a"].tolist()
    assert pairs["text_b"].tolist() == ref["text_b"].tolist()
    assert pairs["preferred"].tolist() == ref["preferred_text"].map(LABEL).tolist()
    assert pairs["model_a"].tolist() == ref["model_a"].tolist()
    assert pairs["language"].tolist() == ref["language"].tolist()
    assert "question_id" in pairs.columns and "raw_preference" in pairs.columns
    assert not any("multi-turn" in w for w in res.report.warnings)


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ")


def hh_turns(prompt: str) -> list[tuple[str, str]] | None:
    """The HH prompt ('Human: ...\\n\\nAssistant: ...') as (role, content) turns, or None if the
    split is not exact."""
    parts = _HH_TURN.split(prompt)
    if parts[0] != "" or len(parts) < 3:
        return None
    turns = [("user" if parts[i] == "Human" else "assistant", parts[i + 1]) for i in range(1, len(parts), 2)]
    rebuilt = "\n\n".join(f"{'Human' if r == 'user' else 'Assistant'}: {c}" for r, c in turns)
    if rebuilt != prompt or turns[-1][0] != "user":
        return None
    return turns


@pytest.fixture(scope="module")
def hh_multiturn(shared_data):
    """Real multi-turn HH-RLHF dialogues (prompt = several turns), as turn lists."""
    ref = read_ref(shared_data / "hh_rlhf_harmless_test.csv")
    rows = []
    for r in ref.itertuples(index=False):
        turns = hh_turns(r.prompt)
        if turns is not None and len(turns) >= 3:
            rows.append((r, turns))
        if len(rows) == 150:
            break
    assert len(rows) == 150
    return rows


def _labelled(turns):
    return "\n\n".join(f"{'User' if r == 'user' else 'Assistant'}: {c}" for r, c in turns)


def test_arena_multi_turn_conversations(hh_multiturn, tmp_path):
    # real multi-turn dialogues (HH-RLHF) written as Arena conversation lists
    recs = []
    for r, turns in hh_multiturn:
        conv = [{"role": role, "content": c} for role, c in turns]
        recs.append({
            "model_a": r.model_a, "model_b": r.model_b,
            "conversation_a": conv + [{"role": "assistant", "content": r.text_a}],
            "conversation_b": conv + [{"role": "assistant", "content": r.text_b}],
            "winner": "model_a" if r.preferred_text == "text_a" else "model_b",
        })
    path = tmp_path / "arena_multiturn.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in recs) + "\n", encoding="utf-8")
    pairs = load_pairs(path).pairs
    for (r, turns), (_, row) in zip(hh_multiturn, pairs.iterrows(), strict=True):
        assert row["prompt"] == _labelled(turns)
        assert row["prompt"].startswith("User: ") and "\n\nAssistant: " in row["prompt"]
        assert (row["text_a"], row["text_b"]) == (r.text_a, r.text_b)
        assert row["preferred"] == LABEL[r.preferred_text]


def test_arena_diverging_earlier_replies(hh_multiturn, tmp_path):
    # Structure test: a two-turn battle whose sides gave different first replies. The texts are real
    # (one HH dialogue); the battle shape is assembled here, since no such Arena rows are stored.
    r, turns = hh_multiturn[0]
    first_user = turns[0][1]
    first_reply = turns[1][1]
    second_user = turns[2][1]
    conv_a = [("user", first_user), ("assistant", first_reply), ("user", second_user), ("assistant", r.text_a)]
    conv_b = [("user", first_user), ("assistant", r.text_b), ("user", second_user), ("assistant", r.text_a)]
    rec = {
        "conversation_a": [{"role": x, "content": c} for x, c in conv_a],
        "conversation_b": [{"role": x, "content": c} for x, c in conv_b],
        "winner": "tie",
    }
    res = load_pairs(json.dumps([rec]).encode(), name="battle.json")
    row = res.pairs.iloc[0]
    assert row["prompt"] == first_user
    assert row["text_a"] == _labelled(conv_a[1:])
    assert row["text_b"] == _labelled(conv_b[1:])
    assert any(w.startswith("1 multi-turn conversations have different earlier replies") for w in res.report.warnings)


def test_arena_kaggle_style(shared_data, tmp_path):
    ref = read_ref(shared_data / "arena_llama3_70b_human.csv")
    kag = pd.DataFrame({
        "id": ref["id"],
        "model_a": ref["model_a"],
        "model_b": ref["model_b"],
        "prompt": [json.dumps([p], ensure_ascii=False) for p in ref["prompt"]],
        "response_a": [json.dumps([t], ensure_ascii=False) for t in ref["text_a"]],
        "response_b": [json.dumps([t], ensure_ascii=False) for t in ref["text_b"]],
        "winner_model_a": (ref["preferred_text"] == "text_a").astype(int),
        "winner_model_b": (ref["preferred_text"] == "text_b").astype(int),
        "winner_tie": (ref["preferred_text"] == "tie").astype(int),
    })
    path = tmp_path / "train.csv"
    kag.to_csv(path, index=False)
    res = load_pairs(path)
    assert res.format == "arena_kaggle"
    pairs = res.pairs
    assert pairs["id"].tolist() == ref["id"].tolist()
    assert pairs["prompt"].tolist() == ref["prompt"].tolist()
    assert pairs["text_a"].tolist() == ref["text_a"].tolist()
    assert pairs["text_b"].tolist() == ref["text_b"].tolist()
    assert pairs["preferred"].tolist() == ref["preferred_text"].map(LABEL).tolist()
    assert {"winner_model_a", "winner_model_b", "winner_tie"} <= set(pairs.columns)


def test_arena_kaggle_multi_turn(hh_multiturn, tmp_path):
    # real multi-turn HH dialogues in Kaggle layout: lists of user turns and per-side reply lists
    rows = []
    for r, turns in hh_multiturn:
        users = [c for role, c in turns if role == "user"]
        replies = [c for role, c in turns if role == "assistant"]
        rows.append({
            "prompt": json.dumps(users), "response_a": json.dumps(replies + [r.text_a]),
            "response_b": json.dumps(replies + [r.text_b]),
            "winner_model_a": int(r.preferred_text == "text_a"), "winner_model_b": int(r.preferred_text == "text_b"),
            "winner_tie": 0,
        })
    path = tmp_path / "kaggle_multiturn.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    pairs = load_pairs(path).pairs
    for (r, turns), (_, row) in zip(hh_multiturn, pairs.iterrows(), strict=True):
        assert row["prompt"] == _labelled(turns)
        assert (row["text_a"], row["text_b"]) == (r.text_a, r.text_b)
        assert row["preferred"] == LABEL[r.preferred_text]


# --------------------------------------------------------------------------- HH-RLHF


@pytest.fixture(scope="module")
def hh_source(shared_data):
    ref = read_ref(shared_data / "hh_rlhf_harmless_test.csv")
    chosen_text = np.where(ref["preferred_text"] == "text_a", ref["text_a"], ref["text_b"])
    rejected_text = np.where(ref["preferred_text"] == "text_a", ref["text_b"], ref["text_a"])
    records = [
        {"chosen": f"\n\n{p}\n\nAssistant: {c}", "rejected": f"\n\n{p}\n\nAssistant: {x}"}
        for p, c, x in zip(ref["prompt"], chosen_text, rejected_text, strict=True)
    ]
    return ref, records, chosen_text, rejected_text


def test_hh_rlhf_chosen_rejected(hh_source, tmp_path):
    ref, records, chosen_text, rejected_text = hh_source
    path = tmp_path / "test.jsonl"  # HH-RLHF's own layout
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    res = load_pairs(path)
    assert res.format == "hh_rlhf"
    pairs = res.pairs
    assert pairs["prompt"].tolist() == ref["prompt"].tolist()
    chosen_is_a = (pairs["preferred"] == "a").to_numpy()
    assert np.where(chosen_is_a, pairs["text_a"], pairs["text_b"]).tolist() == chosen_text.tolist()
    assert np.where(chosen_is_a, pairs["text_b"], pairs["text_a"]).tolist() == rejected_text.tolist()
    # no position artefact: the chosen reply lands in A about half of the time ...
    assert 0.45 < chosen_is_a.mean() < 0.55
    assert pairs["swapped"].tolist() == (~chosen_is_a).tolist()
    # ... by the documented keyed hash, independent of row order
    for rec, a in zip(records[:50], chosen_is_a[:50], strict=True):
        assert D.hh_chosen_is_a(rec["chosen"], rec["rejected"]) == a
    reversed_path = tmp_path / "reversed.jsonl"
    reversed_path.write_text("\n".join(json.dumps(r) for r in records[::-1]), encoding="utf-8")
    again = load_pairs(reversed_path).pairs
    assert again["preferred"].tolist()[::-1] == pairs["preferred"].tolist()


def test_hh_rlhf_gzipped_jsonl(hh_source, tmp_path):
    ref, records, _, _ = hh_source
    path = tmp_path / "test.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in records[:300]).encode()))
    res = load_pairs(path)
    assert res.report.file_type == "jsonl" and res.format == "hh_rlhf"
    assert res.pairs["prompt"].tolist() == ref["prompt"].head(300).tolist()


def test_chosen_rejected_with_prompt_column(hh_source, tmp_path):
    ref, _, chosen_text, rejected_text = hh_source
    df = pd.DataFrame({"prompt": ref["prompt"], "chosen": chosen_text, "rejected": rejected_text}).head(400)
    path = tmp_path / "dpo.parquet"
    df.to_parquet(path, index=False)
    pairs = load_pairs(path).pairs
    assert pairs["prompt"].tolist() == df["prompt"].tolist()
    chosen_is_a = (pairs["preferred"] == "a").to_numpy()
    assert np.where(chosen_is_a, pairs["text_a"], pairs["text_b"]).tolist() == df["chosen"].tolist()


# --------------------------------------------------------------------------- explicit mapping


def test_explicit_mapping_with_native_labels(vicuna, tmp_path):
    ref, expected = vicuna
    # PRD's own 3-class scale (1 = Assistant 1, 2 = Assistant 2, 3 = tie) under other column names
    src = ref.rename(columns={
        "prompt": "question", "text_a": "answer_1", "text_b": "answer_2", "annotator": "rater",
        "raw_preference": "score", "id": "uid",
    }).drop(columns=["preferred_text"])
    path = tmp_path / "prd.csv"
    src.to_csv(path, index=False)
    mapping = ColumnMapping(prompt="question", text_a="answer_1", text_b="answer_2", preferred="score",
                            id="uid", annotator="rater", values={"1": "a", "2": "b", "3": "tie"})
    res = load_pairs(path, mapping=mapping)
    assert res.format == "mapping"
    assert canon(res.pairs).equals(canon(expected))
    assert res.pairs["annotator"].tolist() == ref["annotator"].tolist()
    assert res.pairs["raw_preference"].tolist() == ref["raw_preference"].tolist()
    assert res.report.mapping["preferred"] == "score"
    # the same mapping is what suggest_mapping proposes from the column names (values aside)
    guess = D.suggest_mapping(src.columns)
    assert (guess.prompt, guess.text_a, guess.text_b, guess.preferred, guess.id, guess.annotator) == (
        "question", "answer_1", "answer_2", "score", "uid", "rater")


def test_explicit_mapping_numeric_json_labels(shared_data, tmp_path):
    ref = read_ref(shared_data / "pandalm_human_vs_judges.csv")
    recs = []
    for r in ref.itertuples(index=False):
        raw = r.raw_preference
        recs.append({"instruction": r.prompt, "response1": r.text_a, "response2": r.text_b,
                     "label": int(raw) if raw.isdigit() else raw, "who": r.annotator})
    path = tmp_path / "pandalm.json"
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    mapping = ColumnMapping(prompt="instruction", text_a="response1", text_b="response2", preferred="label",
                            annotator="who", values={"1": "a", "2": "b", "0": "tie", "Tie": "tie"})
    res = load_pairs(path, mapping=mapping)
    assert res.pairs["preferred"].tolist() == ref["preferred_text"].map(LABEL).tolist()
    assert res.pairs["id"].tolist() == [f"row-{i}" for i in range(1, len(ref) + 1)]
    assert res.pairs["annotator"].tolist() == ref["annotator"].tolist()


def test_mapping_without_prompt(shared_data, tmp_path):
    ref = read_ref(shared_data / "prd_lfqa_expert.csv")
    src = ref[["text_a", "text_b", "raw_preference"]]
    path = tmp_path / "noprompt.csv"
    src.to_csv(path, index=False)
    res = load_pairs(path, mapping=ColumnMapping(prompt=None, text_a="text_a", text_b="text_b",
                                                 preferred="raw_preference", values={"-1": "a", "1": "b"}))
    assert (res.pairs["prompt"] == "").all()
    assert res.pairs["preferred"].tolist() == ref["preferred_text"].map(LABEL).tolist()
    assert "no prompt column is mapped, so every prompt is empty" in res.report.warnings


# --------------------------------------------------------------------------- helpers


def test_detect_format_and_suggestions():
    assert D.detect_format(["id", "prompt", "text_a", "text_b", "preferred_text"]) == "principia"
    assert D.detect_format(["instruction", "output_1", "output_2", "preference", "generator_2"]) == "alpacaeval"
    assert D.detect_format(["model_a", "model_b", "conversation_a", "conversation_b", "winner"]) == "arena"
    assert D.detect_format(["id", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b",
                            "winner_tie"]) == "arena_kaggle"
    assert D.detect_format(["chosen", "rejected"]) == "hh_rlhf"
    assert D.detect_format(["id", "prompt", "text_a", "text_b", "preferred", "preferred_text"]) == "canonical"
    assert D.detect_format(["question", "answer"]) == "unknown"
    assert set(D.SUPPORTED_FORMATS) >= {"principia", "alpacaeval", "arena", "arena_kaggle", "hh_rlhf", "mapping"}
    assert set(D.SUPPORTED_FILE_TYPES) == {"csv", "tsv", "json", "jsonl", "parquet"}
    m = D.suggest_mapping(["Question", "Response A", "Response B", "Winner", "Judge"])
    assert (m.prompt, m.text_a, m.text_b, m.preferred, m.annotator) == (
        "Question", "Response A", "Response B", "Winner", "Judge")
    assert D.suggest_mapping(["foo", "bar"]) is None
    assert D.suggest_value_map(["1", "2", "3"]) == {"1": "a", "2": "b", "3": "tie"}
    assert D.suggest_value_map(["text_a", "text_b", "tie"]) == {"text_a": "a", "text_b": "b", "tie": "tie"}
    assert D.suggest_value_map([-1, 1]) == {"-1": "a", "1": "b"}


def test_dataset_summary(shared_data):
    pairs = load_pairs(shared_data / "pandalm_human_vs_judges.csv").pairs
    s = D.dataset_summary(pairs)
    assert s["rows"] == 4970
    assert s["preference_counts"] == {"a": 2148, "b": 2351, "tie": 471}
    assert abs(s["preference_shares"]["tie"] - 471 / 4970) < 1e-12
    assert s["annotators"]["human_pandalm_1"] == 999 and len(s["annotators"]) == 5
    assert s["empty_texts"]["responses_total"] == 270 and s["empty_texts"]["both_responses"] == 0
    assert s["distinct_pairs"] == 999
    la = s["lengths_chars"]["text_a"]
    assert la["min"] == 0 and la["max"] == int(pairs["text_a"].str.len().max())
    assert la["median"] == float(pairs["text_a"].str.len().median())


def test_report_summary_text(shared_data):
    res = load_pairs(shared_data / "alpacaeval_judge_variants.csv")
    text = res.report.summary()
    assert text.startswith("alpacaeval_judge_variants.csv: ICAI / Principia CSV (CSV file); 1,105 rows read, 1,105 kept.")
    assert "10 rows have one empty response" in text


def test_bundled_demo_samples_are_real_rows(shared_data):
    demos = D.bundled_datasets()
    assert set(demos) == {"alpacaeval1_gpt4_judge_sample", "arena_llama3_70b_human_sample",
                          "alpacaeval_human_vs_gpt4_sample"}
    sources = {"alpacaeval1_gpt4_judge_sample": "alpacaeval1_gpt4_judge.csv",
               "arena_llama3_70b_human_sample": "arena_llama3_70b_human.csv",
               "alpacaeval_human_vs_gpt4_sample": "alpacaeval_human_vs_gpt4.csv"}
    for name, path in demos.items():
        assert path.stat().st_size < 1_600_000
        sample = read_ref(path)
        full = read_ref(shared_data / sources[name]).set_index("id", drop=False)
        assert sample.equals(full.loc[sample["id"]].reset_index(drop=True)), name  # unaltered rows
        res = D.load_demo(name)
        assert len(res.pairs) == len(sample)
    hv = read_ref(demos["alpacaeval_human_vs_gpt4_sample"])
    assert hv["pair_id"].nunique() == 150 and (hv.groupby("pair_id").size() == 9).all()
    assert D.load_demo().name == "alpacaeval1_gpt4_judge_sample.csv"


@pytest.mark.parametrize("fname", ["pandalm_human_vs_judges.csv", "hh_rlhf_harmless_test.csv"])
def test_strict_csv_path_reads_the_same_table(shared_data, monkeypatch, fname):
    # the fast pyarrow reader and the strict csv-module reader (used whenever quoting looks unusual)
    # must give identical tables
    fast = load_pairs(shared_data / fname).pairs
    from icai_core.intake import tables

    monkeypatch.setattr(tables, "_arrow_delimited", lambda *a, **k: None)
    slow = load_pairs(shared_data / fname).pairs
    assert list(fast.columns) == list(slow.columns)
    for col in fast.columns:
        assert fast[col].tolist() == slow[col].tolist(), col


def test_literal_quote_inside_an_unquoted_field_is_kept(shared_data, tmp_path):
    ref = read_ref(shared_data / "icai_synthetic_aligned.csv")[["id", "prompt", "text_a", "text_b", "preferred_text"]]
    text = ref.to_csv(index=False)
    # a hand-written CSV where an unquoted field carries a literal inch mark
    path = tmp_path / "inch.csv"
    path.write_text(text.replace("What is the capital of the US?", 'What is the capital of the US? 12" map', 1),
                    encoding="utf-8")
    pairs = load_pairs(path).pairs
    assert pairs.loc[0, "prompt"] == 'What is the capital of the US? 12" map'
    assert pairs["text_a"].tolist() == ref["text_a"].tolist()


def test_jsonl_lines_end_only_at_lf(vicuna, tmp_path):
    # JSON strings may hold U+2028, NEL and FS raw (json.dumps(ensure_ascii=False) writes them so);
    # str.splitlines() would cut the record there
    ref = vicuna[0].head(5).copy()
    ref.loc[ref.index[1], "text_a"] = "one\u2028two \x85 three \x1c four \u2029 five"
    path = tmp_path / "seps.jsonl"
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in ref.to_dict("records")) + "\r\n",
                    encoding="utf-8", newline="")
    res = load_pairs(path)
    assert res.report.rows_read == 5
    assert res.pairs["text_a"].tolist() == ref["text_a"].tolist()


def test_every_registered_format_is_one_unit():
    # SUPPORTED_FORMATS, the signatures and detection all derive from the units in intake/formats
    from icai_core.intake.registry import FORMATS

    names = [f.name for f in FORMATS]
    assert list(D.SUPPORTED_FORMATS) == names + ["mapping"]
    assert D.FORMAT_SIGNATURES == {f.name: f.signature for f in FORMATS}
    for f in FORMATS:
        assert D.detect_format(list(f.signature) + ["id"]) == f.name
