"""Rebuild the bundled demo samples from the shared real data (deterministic).

Usage: python assets/make_samples.py [DATA_DIR]   (default: $PRINCIPIA_DATA_DIR or ../shared/data)

Rows are copied byte for byte: the source files are RFC-4180 CSV that Python's csv writer
reproduces exactly (checked below), so every sample row is identical to its source row, in the
source order. Row draws use numpy.random.default_rng(SEED).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

SEED = 20240601
HERE = Path(__file__).resolve().parent

SAMPLES = {
    # name: (source file, how to draw)
    "alpacaeval1_gpt4_judge_sample.csv": ("alpacaeval1_gpt4_judge.csv", ("rows", 600)),
    "arena_llama3_70b_human_sample.csv": ("arena_llama3_70b_human.csv", ("rows", 300)),
    "alpacaeval_human_vs_gpt4_sample.csv": ("alpacaeval_human_vs_gpt4.csv", ("pairs", 150)),
    # the dataset gallery (ui/gallery.py, assets/gallery.json): every real set we may redistribute
    "alpacaeval2_gpt4turbo_judge_sample.csv": ("alpacaeval2_gpt4turbo_judge.csv", ("rows", 450)),
    "alpacaeval_judge_variants_sample.csv": ("alpacaeval_judge_variants.csv", ("pairs", 150)),
    "pandalm_human_vs_judges_sample.csv": ("pandalm_human_vs_judges.csv", ("pairs", 200)),
    "prd_vicuna80_human_vs_gpt4_sample.csv": ("prd_vicuna80_human_vs_gpt4.csv", ("pairs", 100)),
    "hh_rlhf_harmless_test_sample.csv": ("hh_rlhf_harmless_test.csv", ("rows", 800)),
    "icai_synthetic_orthogonal.csv": ("icai_synthetic_orthogonal.csv", ("all", 0)),
    "icai_synthetic_aligned.csv": ("icai_synthetic_aligned.csv", ("all", 0)),
    "icai_synthetic_mixed.csv": ("icai_synthetic_mixed.csv", ("all", 0)),
}


def _records(path: Path) -> list[list[str]]:
    text = path.read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if _write(rows) != text:
        raise SystemExit(f"{path.name}: csv round trip is not byte-identical; refusing to sample")
    return rows


def _write(rows: list[list[str]]) -> str:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def main(data_dir: Path) -> None:
    for target, (source, (kind, n)) in SAMPLES.items():
        rows = _records(data_dir / source)
        header, data = rows[0], rows[1:]
        rng = np.random.default_rng(SEED)
        if kind == "all":
            keep = set(range(len(data)))
        elif kind == "rows":
            keep = set(rng.choice(len(data), size=n, replace=False).tolist())
        else:
            col = header.index("pair_id")
            pair_ids = sorted({r[col] for r in data})
            chosen = set(rng.choice(len(pair_ids), size=n, replace=False).tolist())
            wanted = {pair_ids[i] for i in chosen}
            keep = {i for i, r in enumerate(data) if r[col] in wanted}
        sample = [header] + [r for i, r in enumerate(data) if i in keep]
        text = _write(sample)
        (HERE / target).write_bytes(text.encode("utf-8"))
        print(f"{target}: {len(sample) - 1} rows from {source}, {len(text.encode('utf-8')):,} bytes")


if __name__ == "__main__":
    default = os.environ.get("PRINCIPIA_DATA_DIR") or str(HERE.parent.parent / "shared" / "data")
    main(Path(sys.argv[1] if len(sys.argv) > 1 else default))
