"""Malformed input: every case gets its own DataError naming file, row, column, problem and remedy.

Each bad file is made in tmp_path from REAL rows of the shared data set and then corrupted in one
specific way; the tests assert the exact message the user reads.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from icai_core.data import ColumnMapping, DataError, load_pairs

SAVE_AS_UTF8 = (
    "Re-save the file with UTF-8 encoding (Excel: Save As > 'CSV UTF-8'; pandas: "
    "to_csv(path, encoding='utf-8')) and load it again."
)
QUOTING = (
    "Fields that contain commas, double quotes or line breaks must be wrapped in double quotes, "
    "with each inner double quote doubled (\"\")."
)
TEXT_HINT = "Put the text in a string (in JSON: in double quotes); use an empty string \"\" if the model produced nothing."


def read_ref(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def aligned(shared_data) -> pd.DataFrame:
    """30 real rows (ICAI synthetic 'aligned' set) in the shared CSV schema."""
    return read_ref(shared_data / "icai_synthetic_aligned.csv")


def error_of(*args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_pairs(*args, **kwargs)
    return info.value


def test_str_is_one_sentence_with_all_parts():
    err = DataError("pairs.csv", 3, "text_a", "something is wrong", "Do this")
    assert str(err) == "pairs.csv, row 3, column 'text_a': something is wrong. Do this."
    assert (err.file, err.row, err.column, err.message, err.hint) == ("pairs.csv", 3, "text_a", "something is wrong",
                                                                      "Do this")
    assert str(DataError("pairs.csv", None, None, "bad", "")) == "pairs.csv: bad."


# --------------------------------------------------------------------------- empty / no rows


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("empty.csv", b"", "empty.csv: the file is empty (0 bytes). "
                       "Choose a file that contains a header row and at least one pair."),
    ("blank.csv", b"\n\n  \n", "blank.csv: the file contains only blank space, no header and no rows. "
                               "Choose a file that contains a header row and at least one pair."),
    ("annotations.json", b"[]", "annotations.json: the file holds an empty list: there are no records. "
                                "Add at least one row with a prompt, two responses and a preference."),
    ("scalar.json", b"42", "scalar.json: the JSON file holds the number 42, not a list of records. "
                           "Save the pairs as a JSON list of objects, one object per pair."),
])
def test_file_without_pairs(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    err = error_of(path)
    assert str(err) == expected
    assert err.row is None and err.column is None


def test_header_only(aligned, tmp_path):
    path = tmp_path / "header_only.csv"
    aligned.head(0).to_csv(path, index=False)
    assert str(error_of(path)) == ("header_only.csv: the file has column names but no data rows. "
                                   "Add at least one row with a prompt, two responses and a preference.")


# --------------------------------------------------------------------------- columns


def test_missing_required_columns(aligned, tmp_path):
    path = tmp_path / "missing.csv"
    aligned.drop(columns=["text_b", "preferred_text"]).to_csv(path, index=False)
    assert str(error_of(path)) == (
        "missing.csv: required columns are missing: text_b, preferred_text (for the principia format; found "
        "columns: id, pair_id, prompt, text_a, model_a, model_b, annotator, language, source, category, swapped, "
        "raw_preference). Rename the columns (the Principia format is prompt, text_a, text_b, preferred_text), "
        "or say which column holds what with a ColumnMapping."
    )


def test_missing_columns_suggests_a_mapping(aligned, tmp_path):
    path = tmp_path / "renamed.csv"
    aligned[["prompt", "text_a", "text_b", "preferred_text"]].rename(
        columns={"prompt": "question", "text_a": "answer1", "text_b": "answer2", "preferred_text": "winner"}
    ).to_csv(path, index=False)
    assert str(error_of(path)) == (
        "renamed.csv: required columns are missing: text_a, text_b, preferred_text (for the principia format; "
        "found columns: question, answer1, answer2, winner). Rename the columns (the Principia format is prompt, "
        "text_a, text_b, preferred_text), or say which column holds what with a ColumnMapping; a possible "
        "mapping is prompt='question', text_a='answer1', text_b='answer2', preferred='winner'."
    )


def test_duplicate_column_names(aligned, tmp_path):
    path = tmp_path / "dup_header.csv"
    path.write_text(aligned.to_csv(index=False).replace("model_b,", "model_a,", 1), encoding="utf-8")
    err = error_of(path)
    assert str(err) == ("dup_header.csv, column 'model_a': two columns have this name (columns 7 and 8). "
                        "Rename one of them so that every column name is unique.")


def test_ambiguous_format(aligned, tmp_path):
    path = tmp_path / "both.csv"
    both = aligned.assign(chosen=aligned["text_a"], rejected=aligned["text_b"])
    both.to_csv(path, index=False)
    assert str(error_of(path)) == (
        "both.csv: the columns match more than one known format (principia: text_a, text_b, preferred_text; "
        "hh_rlhf: chosen, rejected). Choose one with fmt='principia' or fmt='hh_rlhf', or give an explicit "
        "column mapping."
    )
    assert len(load_pairs(path, fmt="principia").pairs) == 30  # the remedy works


def test_mapping_names_a_missing_column(shared_data):
    mapping = ColumnMapping(prompt="prompt", text_a="text_a", text_b="response_b", preferred="preferred_text")
    err = error_of(shared_data / "icai_synthetic_aligned.csv", mapping=mapping)
    assert err.column == "response_b"
    assert str(err) == (
        "icai_synthetic_aligned.csv, column 'response_b': the column mapping uses this column for text_b, but "
        "the file has no such column. Choose one of the file's columns: id, pair_id, prompt, text_a, text_b, "
        "preferred_text, model_a, model_b, annotator, language, source, category, swapped, raw_preference."
    )


def test_mapping_value_map_to_a_non_preference(shared_data):
    mapping = ColumnMapping(prompt="prompt", text_a="text_a", text_b="text_b", preferred="raw_preference",
                            values={"1": "first"})
    assert str(error_of(shared_data / "prd_vicuna80_human_vs_gpt4.csv", mapping=mapping)) == (
        "prd_vicuna80_human_vs_gpt4.csv, column 'raw_preference': the value map sends '1' to 'first', which is "
        "not a preference. Map every label to 'a', 'b' or 'tie'."
    )


# --------------------------------------------------------------------------- values


def test_unknown_preference_value(aligned, tmp_path):
    bad = aligned.copy()
    bad.loc[4, "preferred_text"] = "text_c"
    path = tmp_path / "labels.csv"
    bad.to_csv(path, index=False)
    err = error_of(path)
    assert (err.row, err.column) == (5, "preferred_text")
    assert str(err) == (
        "labels.csv, row 5, column 'preferred_text': the preference value 'text_c' is not recognised. Use one "
        "of: text_a, text_b, tie (a, b, A and B are also accepted); or translate the value with the value map "
        "of a ColumnMapping."
    )


def test_unmapped_native_label(shared_data):
    # PRD's scale has 3 = tie; a value map that forgets it names the first row that uses it
    mapping = ColumnMapping(prompt="prompt", text_a="text_a", text_b="text_b", preferred="raw_preference",
                            values={"1": "a", "2": "b"})
    assert str(error_of(shared_data / "prd_vicuna80_human_vs_gpt4.csv", mapping=mapping)) == (
        "prd_vicuna80_human_vs_gpt4.csv, row 4, column 'raw_preference': the preference value '3' is not "
        "recognised. Use one of: 1, 2; or translate the value with the value map of a ColumnMapping."
    )


def test_prompt_and_both_texts_empty(aligned, tmp_path):
    bad = aligned.copy()
    bad.loc[6, ["prompt", "text_a", "text_b"]] = ""
    path = tmp_path / "hollow.csv"
    bad.to_csv(path, index=False)
    err = error_of(path)
    assert (err.row, err.column) == (7, None)
    assert str(err) == ("hollow.csv, row 7: the prompt and both responses are empty. Remove this row or fill in "
                        "its texts: a pair needs a prompt or at least one response.")


@pytest.mark.parametrize(("ext", "pos", "column", "value", "expected"), [
    ("json", 2, "text_a", "object", f"pairs.json, row 3, column 'text_a': expected text but found a JSON object. "
                                    f"{TEXT_HINT}"),
    ("json", 3, "text_b", 42, f"pairs.json, row 4, column 'text_b': expected text but found the number 42. {TEXT_HINT}"),
    ("jsonl", 3, "text_b", None, "pairs.jsonl, row 4, column 'text_b': expected text but the cell is empty (null). "
                                 "Put the text in a string; use an empty string \"\" if the model produced nothing."),
])
def test_json_text_cell_that_is_not_text(aligned, tmp_path, ext, pos, column, value, expected):
    recs = aligned.to_dict(orient="records")
    recs[pos][column] = {"content": recs[pos][column]} if value == "object" else value
    path = tmp_path / f"pairs.{ext}"
    text = json.dumps(recs) if ext == "json" else "\n".join(json.dumps(r) for r in recs)
    path.write_text(text, encoding="utf-8")
    assert str(error_of(path)) == expected


def test_json_record_without_a_field(aligned, tmp_path):
    recs = aligned.to_dict(orient="records")
    del recs[5]["prompt"]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    assert str(error_of(path)) == ("pairs.json, row 6, column 'prompt': this record has no 'prompt' field. "
                                   "Give every record a 'prompt' field holding the text.")


def test_duplicate_ids(aligned, tmp_path):
    bad = aligned.copy()
    bad.loc[9, "id"] = bad.loc[2, "id"]
    path = tmp_path / "dups.csv"
    bad.to_csv(path, index=False)
    err = error_of(path)
    assert (err.row, err.column) == (10, "id")
    assert str(err) == (
        "dups.csv, row 10, column 'id': the id 'icai-aligned-02-rule' appears more than once (rows 3 and 10). "
        "Ids must be unique: remove the duplicated row or give it its own id, or drop the id column to have ids "
        "generated."
    )


def test_empty_id(aligned, tmp_path):
    bad = aligned.copy()
    bad.loc[3, "id"] = ""
    path = tmp_path / "noid.csv"
    bad.to_csv(path, index=False)
    assert str(error_of(path)) == ("noid.csv, row 4, column 'id': the id is empty. Give every row an id, or drop "
                                   "the id column to have ids generated (row-1, row-2, ...).")


# --------------------------------------------------------------------------- encodings and size


def test_latin1_encoding(shared_data, tmp_path):
    # real HH-RLHF rows whose text is representable in Windows-1252 and holds non-ASCII characters
    ref = read_ref(shared_data / "hh_rlhf_harmless_test.csv").head(60)
    text = ref.to_csv(index=False)
    raw = text.encode("cp1252", errors="strict")
    first = next(i for i, b in enumerate(raw) if b >= 0x80)
    line = raw.count(b"\n", 0, first) + 1
    row = ref.index[ref.apply(lambda r: any(any(ord(ch) > 127 for ch in v) for v in r), axis=1)][0] + 1
    path = tmp_path / "latin1.csv"
    path.write_bytes(raw)
    err = error_of(path)
    assert err.row == row
    assert str(err) == (
        f"latin1.csv, row {row}: the file is not UTF-8 text: the byte 0x{raw[first]:02x} at byte offset "
        f"{first:,} (line {line}) cannot be decoded; it looks like Latin-1 / Windows-1252 text. {SAVE_AS_UTF8}"
    )


def test_utf16_encoding(aligned, tmp_path):
    path = tmp_path / "utf16.csv"
    path.write_bytes(aligned.to_csv(index=False).encode("utf-16"))
    assert str(error_of(path)) == (
        f"utf16.csv: the file is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8. {SAVE_AS_UTF8}")


def test_utf16_without_byte_order_mark(aligned, tmp_path):
    path = tmp_path / "utf16le.csv"
    path.write_bytes(aligned.to_csv(index=False).encode("utf-16-le"))
    assert str(error_of(path)) == (
        "utf16le.csv: the file contains NUL bytes (the first at byte offset 1), so it is not UTF-8 text; it may "
        "be UTF-16 text without a byte-order mark, or a binary file such as a spreadsheet. " + SAVE_AS_UTF8)


def test_file_too_large(shared_data):
    path = shared_data / "icai_synthetic_aligned.csv"
    size = path.stat().st_size
    err = error_of(path, max_bytes=10_000)
    assert str(err) == (
        f"icai_synthetic_aligned.csv: the file is 14.7 kB ({size:,} bytes), more than the 10.0 kB (10,000 bytes) "
        "that can safely be loaded into memory here. Load a smaller sample of the file, or raise the limit with "
        "load_pairs(..., max_bytes=...) or the PRINCIPIA_MAX_BYTES environment variable if the machine has "
        "enough memory."
    )
    # the same check for uploaded bytes, without reading them into a table
    assert str(error_of(path.read_bytes(), name="upload.csv", max_bytes=10_000)).startswith(
        "upload.csv: the file is 14.7 kB (14,651 bytes), more than the 10.0 kB")


# --------------------------------------------------------------------------- malformed CSV


def test_unclosed_quote(aligned, tmp_path):
    body = aligned.to_csv(index=False).rstrip("\n")
    cut = body.rfind(",")
    path = tmp_path / "unclosed.csv"
    path.write_text(body[: cut + 1] + '"' + body[cut + 1:] + "\n", encoding="utf-8")  # last field never closed
    err = error_of(path)
    assert err.row == 30
    assert str(err) == (
        "unclosed.csv, row 30: a quoted field that starts in this row (line 31) is never closed: the file ends "
        "inside the quotes. Add the missing closing double quote. " + QUOTING)


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    ("stray.csv", "icai-aligned-05-rule,", 'icai-aligned-05-rule,"',
     "stray.csv, row 6: a closing double quote in this row (line 7) is followed by other text instead of a "
     "separator. "),
    ("wide.csv", "icai-aligned-05-rule,", "icai-aligned-05-rule,x,",
     "wide.csv, row 6: this row (line 7) has 15 fields but the header has 14 columns (an unquoted separator or "
     "a stray quote?). "),
    ("narrow.csv", "icai-aligned-05-rule,icai-aligned-05,", "icai-aligned-05-rule,",
     "narrow.csv, row 6: this row (line 7) has 13 fields but the header has 14 columns (a missing field or a "
     "stray quote?). "),
])
def test_one_bad_csv_row_is_named(aligned, tmp_path, name, old, new, expected):
    # row 6 of the real file (line 7) gets a stray quote, an extra field or loses one
    path = tmp_path / name
    path.write_text(aligned.to_csv(index=False).replace(old, new, 1), encoding="utf-8")
    assert str(error_of(path)) == expected + QUOTING


# --------------------------------------------------------------------------- malformed JSON / JSONL / Parquet


def test_malformed_json(aligned, tmp_path):
    text = json.dumps(aligned.to_dict(orient="records"), indent=1)
    path = tmp_path / "broken.json"
    path.write_text(text.replace('"text_b": ', '"text_b" ', 1), encoding="utf-8")
    assert str(error_of(path)) == (
        "broken.json: the file is not valid JSON: Expecting ':' delimiter at line 7, column 12. Fix the JSON at "
        "that position (a missing comma, bracket or quote is typical) or export the data again.")


def test_json_record_is_not_an_object(aligned, tmp_path):
    recs = aligned.to_dict(orient="records")
    recs[1] = list(recs[1].values())
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    assert str(error_of(path)) == ("mixed.json, row 2: this record is a list, not a JSON object. Make every element "
                                   "of the list an object such as {\"prompt\": ..., \"text_a\": ...}.")


def test_malformed_jsonl(aligned, tmp_path):
    lines = [json.dumps(r) for r in aligned.to_dict(orient="records")]
    col = len(lines[7])
    lines[7] = lines[7][:-1]  # the closing brace is lost
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = error_of(path)
    assert err.row == 8
    assert str(err) == (f"broken.jsonl, row 8: line 8 is not valid JSON: Expecting ',' delimiter at column {col}. "
                        "Each line must hold one complete JSON object; fix or remove this line.")


def test_unreadable_parquet(aligned, tmp_path):
    good = tmp_path / "good.parquet"
    aligned.to_parquet(good, index=False)
    raw = good.read_bytes()
    path = tmp_path / "truncated.parquet"
    path.write_bytes(raw[: len(raw) // 2])
    text = str(error_of(path))
    assert text.startswith("truncated.parquet: the file cannot be read as Parquet (")
    assert text.endswith("). Re-export the Parquet file, or save the data as CSV or JSON instead.")


@pytest.mark.parametrize(("fname", "hint"), [
    ("pairs.xlsx", "Export the sheet as CSV (Excel: Save As > 'CSV UTF-8') and load that file."),
    ("pairs.dat", "Save the data as CSV (UTF-8), TSV, JSON, JSON Lines or Parquet, or pass fmt='csv' (or another "
                  "file type) if the content is in one of these formats."),
])
def test_unsupported_extension(aligned, tmp_path, fname, hint):
    path = tmp_path / fname
    path.write_text(aligned.to_csv(index=False), encoding="utf-8")
    ext = fname.rsplit(".", 1)[1]
    assert str(error_of(path)) == f"{fname}: files of type '.{ext}' are not supported. {hint}"


def test_unsupported_extension_web_text_has_no_api_advice(aligned, tmp_path):
    path = tmp_path / "pairs.dat"
    path.write_text(aligned.to_csv(index=False), encoding="utf-8")
    web = error_of(path).web_text()
    assert web.startswith("pairs.dat: files of type '.dat' are not supported. ")
    assert "fmt=" not in web and "ColumnMapping" not in web


@pytest.mark.parametrize(("body", "kind"), [("csv", "CSV (comma-separated)"), ("tsv", "TSV (tab-separated)")])
def test_txt_file_is_read_by_its_content_and_says_so(aligned, tmp_path, body, kind):
    # .txt is offered by the app's uploader, so it must load (and say how it was read)
    path = tmp_path / "pairs.txt"
    path.write_text(aligned.to_csv(index=False, sep="," if body == "csv" else "\t"), encoding="utf-8")
    res = load_pairs(path)
    assert res.report.file_type == body
    assert f"the .txt file was read as {kind}, judging by its content" in res.report.warnings
    assert res.pairs["text_a"].tolist() == aligned["text_a"].tolist()


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    assert str(error_of(path)) == f"nowhere.csv: the file does not exist. Check the path {str(path)!r}."


# --------------------------------------------------------------------------- policies and source formats


def test_all_rows_excluded_by_tie_policy(shared_data, tmp_path):
    ref = read_ref(shared_data / "alpacaeval2_gpt4turbo_judge.csv")
    path = tmp_path / "ties.csv"
    ref[ref["preferred_text"] == "tie"].to_csv(path, index=False)  # the 16 real ties
    assert len(load_pairs(path).pairs) == 16
    err = error_of(path, ties="exclude")
    assert str(err) == ("ties.csv, column 'preferred_text': all 16 rows are ties, and ties='exclude' removes them "
                        "all. Keep ties (ties='keep') or choose data with at least one non-tie preference.")


def test_alpacaeval_preference_out_of_range(shared_data, tmp_path):
    ref = read_ref(shared_data / "alpacaeval1_gpt4_judge.csv").head(10)
    recs = [{"instruction": r.prompt, "output_1": r.text_a, "output_2": r.text_b, "preference": float(r.raw_preference)}
            for r in ref.itertuples(index=False)]
    recs[6]["preference"] = 3.0
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    assert str(error_of(path)) == (
        "annotations.json, row 7, column 'preference': the preference value 3.0 is outside AlpacaEval's range 1 "
        "to 2. Use 1 (output_1 better), 2 (output_2 better), 1.5 (tie) or a weighted value in between.")
    recs[6]["preference"] = "first"
    path.write_text(json.dumps(recs), encoding="utf-8")
    assert str(error_of(path)) == (
        "annotations.json, row 7, column 'preference': the preference value 'first' is not a number. AlpacaEval "
        "preferences are numbers: 1 = output_1 better, 2 = output_2 better, 1.5 = tie (values in between are "
        "weighted preferences).")


@pytest.fixture(scope="module")
def arena_rows(shared_data):
    return read_ref(shared_data / "arena_llama3_70b_human.csv").head(10)


def _battles(ref):
    return [{
        "conversation_a": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.text_a}],
        "conversation_b": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.text_b}],
        "winner": "model_a" if r.preferred_text == "text_a" else "model_b",
    } for r in ref.itertuples(index=False)]


def test_arena_unknown_winner(arena_rows, tmp_path):
    recs = _battles(arena_rows)
    recs[4]["winner"] = "model_c"
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    assert str(error_of(path)) == (
        "battles.json, row 5, column 'winner': the preference value 'model_c' is not recognised. Use one of: "
        "model_a, model_b, tie, tie (bothbad); or translate the value with the value map of a ColumnMapping.")


def test_arena_conversation_is_not_a_conversation(arena_rows, tmp_path):
    recs = _battles(arena_rows)
    recs[5]["conversation_b"] = recs[5]["conversation_b"][1]["content"]  # plain text instead of turns
    path = tmp_path / "battles.json"
    path.write_text(json.dumps(recs), encoding="utf-8")
    assert str(error_of(path)) == (
        "battles.json, row 6, column 'conversation_b': expected a conversation (a list of {role, content} turns) "
        "but found other text. Give the conversation as a JSON list such as [{\"role\": \"user\", \"content\": "
        "...}, {\"role\": \"assistant\", \"content\": ...}].")


def test_arena_conversation_without_final_reply(arena_rows, tmp_path):
    recs = _battles(arena_rows)
    recs[5]["conversation_b"] = recs[5]["conversation_b"][:1]  # the judged reply is missing
    path = tmp_path / "battles.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    assert str(error_of(path)) == (
        "battles.jsonl, row 6, column 'conversation_b': the conversation does not end with an assistant reply. "
        "Each side must end with the assistant reply that was judged.")


def test_kaggle_winner_flags(arena_rows, tmp_path):
    ref = arena_rows
    kag = pd.DataFrame({
        "prompt": [json.dumps([p]) for p in ref["prompt"]],
        "response_a": [json.dumps([t]) for t in ref["text_a"]],
        "response_b": [json.dumps([t]) for t in ref["text_b"]],
        "winner_model_a": (ref["preferred_text"] == "text_a").astype(int),
        "winner_model_b": (ref["preferred_text"] == "text_b").astype(int),
        "winner_tie": 0,
    })
    kag.loc[2, ["winner_model_a", "winner_model_b"]] = 1
    path = tmp_path / "train.csv"
    kag.to_csv(path, index=False)
    assert str(error_of(path)) == (
        "train.csv, row 3: exactly one of winner_model_a, winner_model_b, winner_tie must be 1, but this row has "
        "winner_model_a='1', winner_model_b='1', winner_tie='0'. Set the column of the winner to 1 and the two "
        "others to 0.")


def test_hh_dialogues_without_shared_history(shared_data, tmp_path):
    ref = read_ref(shared_data / "hh_rlhf_harmless_test.csv").head(10)
    recs = [{"chosen": f"\n\n{r.prompt}\n\nAssistant: {r.text_a}", "rejected": f"\n\n{r.prompt}\n\nAssistant: {r.text_b}"}
            for r in ref.itertuples(index=False)]
    recs[7]["rejected"] = ref["text_b"][7]  # the reply alone, without the dialogue
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    assert str(error_of(path)) == (
        "hh.jsonl, row 8, column 'chosen': the chosen and rejected dialogues do not share a history that ends "
        "with '\\n\\nAssistant:'. Give HH-RLHF dialogues ('\\n\\nHuman: ...\\n\\nAssistant: ...'), or add a "
        "'prompt' column and put only the two replies in 'chosen' and 'rejected'.")
