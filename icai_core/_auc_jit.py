"""Compiled (numba) loop of the reconstruction bootstrap's AUC (`icai_core.crossval`); load it with
`icai_core.jit.load("_auc_jit")`, not by importing it (see `icai_core.jit` for its on-disk cache).

One pass over the rows, grouped by score level, per bootstrap draw: the numpy version made ~10
passes over every row per draw (gather the draw's weights, mask, two weighted bincounts, cumsum),
~80% of `_auc_with_ci`. The sums are of integer-valued weights in float64, exact at any realistic size
(every partial sum stays below 2^53), so the AUC is `crossval._auc_of_ranked`'s to the last bit.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def weighted_auc_parts(level_start, pos_sorted, code_sorted, times):
    """(numerator, weight of positives, weight of negatives) of the tie-corrected AUC for one draw.

    Rows are sorted by score level; level l's rows are `level_start[l]:level_start[l + 1]`. A row's
    weight is `times[its cluster]`, the number of times the draw took its prompt. AUC = numerator /
    (positives * negatives): each positive counts the negatives below its level, and half of those at
    it.
    """
    num = 0.0
    below = 0.0
    n_pos = 0.0
    for level in range(len(level_start) - 1):
        wp = 0.0
        wn = 0.0
        for i in range(level_start[level], level_start[level + 1]):
            w = times[code_sorted[i]]
            if pos_sorted[i]:
                wp += w
            else:
                wn += w
        num += wp * (below + 0.5 * wn)
        below += wn
        n_pos += wp
    return num, n_pos, below
