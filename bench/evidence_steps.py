"""What each piece of the evidence stage costs: the measurement behind `evidence.STEP_COST_PER_1000_ROWS`.

    .venv/bin/python bench/evidence_steps.py [--pairs 100000] [--folds 5]

Builds N distinct pairs from real shared texts (`bench.synth.distinct_pairs`, seed 1), computes the
measurable judges' votes (no embeddings) and the evidence's text features, then runs
`evidence.audit_annotator` with a `step` callback that timestamps every call. A piece starts at one
call and ends at the next (the style-control refits belong to the style piece, as in the app's
progress). Prints, per kind of piece, the measured seconds per 1,000 rows next to the weight the
progress bar uses, the share of the stage each kind takes measured vs planned, and one JSON line.
Only the ratios matter for the bar: if a kind's measured share is far from its planned share, the
time left drifts while that kind runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()

    from bench.synth import distinct_pairs
    from icai_core import evidence as E
    from icai_core import judges as J
    from icai_core.stages_offline import compute_votes_cached

    n = args.pairs
    pairs = distinct_pairs(n, seed=1)
    t = time.perf_counter()
    votes = compute_votes_cached(pairs, use_embeddings=False)
    votes_s = time.perf_counter() - t
    t = time.perf_counter()
    fa, fb = J.compute_features(pairs, names=E.EVIDENCE_FEATURES)
    features_s = time.perf_counter() - t

    marks = [time.perf_counter()]  # the caller's own first call ("controlled effects")

    def step(message: str) -> None:
        if message and not message.startswith("style control without"):
            marks.append(time.perf_counter())

    E.audit_annotator(pairs, votes, annotator="all", features=(fa, fb), folds=args.folds, step=step)
    marks.append(time.perf_counter())
    k = votes.shape[1]
    plan = E.step_plan(k, args.folds)
    durations = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    assert len(durations) == len(plan), (len(durations), len(plan))
    n_methods = len(plan) - 4 - k - args.folds
    kinds = ["start"] + ["principle"] * k + ["style", "views", "split"] + ["fold"] * args.folds + ["method"] * n_methods
    total_d, total_p = sum(durations), sum(plan)
    out = {"pairs": n, "principles": k, "folds": args.folds, "votes_s": round(votes_s, 2),
           "features_s": round(features_s, 2), "features_s_per_item": features_s / n,
           "evidence_s": round(total_d, 2), "load_avg": round(os.getloadavg()[0], 2), "kinds": {}}
    print(f"{n:,} distinct pairs, {k} principles, {args.folds} folds: votes {votes_s:.1f} s, "
          f"features {features_s:.2f} s, evidence {total_d:.1f} s; load {os.getloadavg()[0]:.1f}")
    print(f"{'piece':<11}{'n':>4}{'s per 1000 rows':>17}{'planned':>9}{'share':>8}{'planned':>9}")
    for kind in dict.fromkeys(kinds):
        d = [x for x, kk in zip(durations, kinds, strict=True) if kk == kind]
        p = [x for x, kk in zip(plan, kinds, strict=True) if kk == kind]
        per = sum(d) / len(d) / n * 1000
        row = {"n": len(d), "s_per_1000_rows": round(per, 5), "planned": round(sum(p) / len(p), 5),
               "share": round(sum(d) / total_d, 3), "planned_share": round(sum(p) / total_p, 3)}
        out["kinds"][kind] = row
        print(f"{kind:<11}{len(d):>4}{per:>17.4f}{row['planned']:>9.4f}{row['share']:>8.1%}{row['planned_share']:>9.1%}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
