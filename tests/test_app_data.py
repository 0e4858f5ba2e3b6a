"""Data page: uploads (real bytes, every file type), bad uploads shown with their exact message,
the column-mapping fallback, bundled samples and the `?dataset=` / session-state paths."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest

from icai_core.data import DataError, load_pairs
from tests.test_app_common import (
    DATA,
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    needs_data,
    new_app,
    texts,
)
from ui import intake as I
from ui import safe as S

pytestmark = needs_data
FILE = "prd_lfqa_expert.csv"


@pytest.fixture(scope="module")
def csv_bytes() -> bytes:
    return (DATA / FILE).read_bytes()


@pytest.fixture(scope="module")
def frame(csv_bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(csv_bytes), keep_default_na=False, dtype=str)


def _as(fmt: str, df: pd.DataFrame) -> bytes:
    if fmt == "tsv":
        return df.to_csv(sep="\t", index=False).encode()
    if fmt == "jsonl":
        return df.to_json(orient="records", lines=True, force_ascii=False).encode()
    if fmt == "json":
        return df.to_json(orient="records", force_ascii=False).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    return df.to_csv(index=False).encode()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_upload_handler_reads_real_bytes_in_every_format(fmt, frame, csv_bytes):
    data = csv_bytes if fmt == "csv" else _as(fmt, frame)
    out = I.handle_upload(f"lfqa.{fmt}", data)
    assert out.ok and out.error is None
    pairs = out.result.pairs
    assert len(pairs) == len(frame) == 260
    assert set(pairs["preferred"]) <= {"a", "b", "tie"}
    assert pairs["text_a"].tolist() == frame["text_a"].tolist()  # text kept verbatim


def test_upload_handler_reports_the_loaders_exact_message(frame):
    bad = frame.copy()
    bad.loc[2, "preferred_text"] = "maybe"
    data = bad.to_csv(index=False).encode()
    out = I.handle_upload("bad.csv", data)
    with pytest.raises(DataError) as err:
        load_pairs(data, name="bad.csv")
    assert out.error == err.value.web_text()
    assert "row 3" in out.error and "column 'preferred_text'" in out.error
    assert not out.needs_mapping  # a row-level problem: fix the data, no mapping form


def test_upload_handler_offers_a_mapping_for_unknown_columns(frame):
    ren = frame.rename(columns={"text_a": "left", "text_b": "right", "preferred_text": "verdict"})
    ren["verdict"] = ren["verdict"].map({"text_a": "1", "text_b": "2", "tie": "0"})
    data = ren.to_csv(index=False).encode()
    out = I.handle_upload("renamed.csv", data)
    assert not out.ok and out.needs_mapping
    assert "required columns are missing" in out.error
    assert {"left", "right", "verdict"} <= set(out.columns)
    assert I.raw_values("renamed.csv", data, "verdict")[:3] and set(
        I.raw_values("renamed.csv", data, "verdict")
    ) <= {
        "0",
        "1",
        "2",
    }
    mapping = I.mapping_from_choices(
        {"prompt": "prompt", "text_a": "left", "text_b": "right", "preferred": "verdict"}, "1=a, 2=b, 0=tie"
    )
    ok = I.handle_upload("renamed.csv", data, mapping=mapping)
    assert ok.ok and len(ok.result.pairs) == 260
    assert (ok.result.pairs["preferred"] == frame["preferred_text"].map({"text_a": "a", "text_b": "b"})).all()
    with pytest.raises(ValueError):
        I.parse_value_map("1=left")


def test_file_uploader_loads_a_shared_csv(csv_bytes, frame):
    at = new_app()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="upload_file").upload(FILE, csv_bytes, "text/csv").run()
    assert_ok(at)
    assert not at.error
    ds = at.session_state["dataset"]
    assert ds.name == FILE and ds.n == 260 and ds.source == "upload"
    metrics = {m.label: m.value for m in at.metric}
    # 260 expert judgements of 140 distinct (prompt, A, B) pairs: counts are distinct pairs
    distinct = frame[["prompt", "text_a", "text_b"]].drop_duplicates()
    assert metrics["Distinct pairs"] == f"{len(distinct)}" == "140"
    # one annotator label in this file: the 120 extra rows are repeats of pairs it already judged
    assert any("260 rows, 140 distinct pairs: 120 rows repeat a pair" in c.value for c in at.caption), [
        c.value for c in at.caption]
    assert any(f"Loaded: {FILE}" in s.value.replace("\\", "") for s in at.subheader)
    assert len(at.get("plotly_chart")) >= 2  # chosen vs rejected length + preference balance
    # ties policy reloads the file
    at.radio(key="ties").set_value("exclude").run()
    assert_ok(at)


def test_bad_upload_shows_the_exact_message_with_st_error(frame):
    bad = frame.copy()
    bad.loc[4, "preferred_text"] = "both are fine"
    data = bad.to_csv(index=False).encode()
    with pytest.raises(DataError) as err:
        load_pairs(data, name="bad_labels.csv")
    at = new_app()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="upload_file").upload("bad_labels.csv", data, "text/csv").run()
    assert_ok(at)
    # the loader's exact words, through the Markdown choke point (file and column names are user text)
    assert texts(at.error) == [S.md(err.value.web_text())]
    assert "row 5" in at.error[0].value and "column \\'preferred\\_text\\'" in at.error[0].value
    assert "dataset" not in at.session_state
    assert not at.exception


def test_mapping_form_fallback_loads_the_file(frame):
    ren = frame.rename(columns={"text_a": "left", "text_b": "right", "preferred_text": "verdict"})
    data = ren.to_csv(index=False).encode()
    at = new_app()
    at.switch_page("pages/data.py").run()
    at.file_uploader(key="upload_file").upload("renamed.csv", data, "text/csv").run()
    assert_ok(at)
    with pytest.raises(DataError) as err:
        load_pairs(data, name="renamed.csv")
    # unrecognised columns are not an error: the loader's words as information, the form pre-filled
    assert not at.error and texts(at.info)[0] == S.md(err.value.web_text())
    at.selectbox(key="map_text_a").set_value("left")
    at.selectbox(key="map_text_b").set_value("right")
    at.selectbox(key="map_preferred").set_value("verdict")
    at.selectbox(key="map_prompt").set_value("prompt")
    at.button[[b.label for b in at.button].index("Load with this mapping")].click().run()
    assert_ok(at)
    assert not at.error
    assert at.session_state["dataset"].n == 260


def test_bundled_sample_and_query_param_paths():
    at = new_app()
    at.switch_page("pages/data.py").run()
    from icai_core.data import bundled_datasets

    names = list(bundled_datasets())
    assert len(names) >= 2 and len(at.selectbox(key="bundled_choice").options) == len(names)
    at.selectbox(key="bundled_choice").set_value(names[1])
    at.button(key="bundled_load").click().run()
    assert_ok(at)
    assert at.session_state["dataset"].name == names[1]

    from streamlit.testing.v1 import AppTest

    from tests.test_app_common import APP

    qp = AppTest.from_file(APP, default_timeout=60)
    qp.query_params["dataset"] = names[0]
    qp.run()
    assert_ok(qp)
    assert qp.session_state["dataset"].name == names[0] and qp.session_state["dataset"].source == "bundled"

    unknown = AppTest.from_file(APP, default_timeout=60)
    unknown.query_params["dataset"] = "no-such-dataset"
    unknown.run()
    assert "Unknown bundled dataset" in unknown.error[0].value


def test_session_state_dataset_path():
    from ui.common import LoadedDataset, pairs_hash

    pairs = load_pairs(DATA / "icai_synthetic_mixed.csv").pairs
    ds = LoadedDataset(name="synthetic", pairs=pairs, hash=pairs_hash(pairs))
    at = new_app(dataset=ds)
    at.switch_page("pages/data.py").run()
    assert_ok(at)
    assert {m.label: m.value for m in at.metric}["Distinct pairs"] == "60"


def test_the_data_page_says_why_rows_outnumber_distinct_pairs():
    """alpacaeval1_gpt4_judge.csv: one annotator, 1,758 rows, 1,744 distinct pairs. The page used to say
    "several annotators or repeated rows judge the same pair"; it names the 14 repeated rows and the 4
    pairs whose repeats disagree (the length figures keep the first row of each), counted here
    independently with pandas."""
    from icai_core import figures as F
    from ui.common import LoadedDataset, pairs_hash

    pairs = load_pairs(DATA / "alpacaeval1_gpt4_judge.csv").pairs
    cols = ["prompt", "text_a", "text_b", "annotator"]
    repeats = int(pairs.duplicated(subset=cols).sum())
    conflicting = int((pairs.groupby(cols)["preferred"].nunique() > 1).sum())
    assert (repeats, conflicting) == (14, 4)
    assert F.repeated_judgements(pairs) == {"repeats": repeats, "conflicting": conflicting}
    ds = LoadedDataset(name="alpacaeval1", pairs=pairs, hash=pairs_hash(pairs))
    at = new_app(dataset=ds)
    at.switch_page("pages/data.py").run()
    for _ in range(30):  # the word counts run in a background thread; the page polls it
        if any("distinct pairs:" in c.value for c in at.caption):
            break
        time.sleep(1)
        at.run()
    assert_ok(at)
    line = next(c.value for c in at.caption if "distinct pairs:" in c.value)
    assert "1,758 rows, 1,744 distinct pairs" in line and "14 rows repeat" in line and "4 of these pairs" in line
    assert "several annotators" not in line
