"""Evaluation helpers for unsupervised classification (NumPy): one-to-one matching of components to classes.

The assignment is solved exactly by the Hungarian algorithm (shortest augmenting paths with potentials,
O(n^3)), written here so that SciPy is not a runtime dependency.
"""

from __future__ import annotations

import numpy as np


def match_components(cost, maximize: bool = False):
    """Optimal one-to-one assignment of rows to columns.

    Args:
      cost: (r, c) matrix.
      maximize: maximise the total instead of minimising it.

    Returns:
      (row_ind, col_ind), as ``scipy.optimize.linear_sum_assignment``: ``min(r, c)`` pairs, rows ascending.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"cost must be 2-D, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("cost contains NaN or infinity")
    if maximize:
        c = -c
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape  # n <= m
    # potentials u (rows), v (columns); p[j] = row matched to column j (1-based, 0 = none)
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=int)
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    rows, cols = [], []
    for j in range(1, m + 1):
        if p[j]:
            rows.append(p[j] - 1)
            cols.append(j - 1)
    rows, cols = np.asarray(rows), np.asarray(cols)
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order], cols[order]


def contingency(labels, pred, n_classes=None, n_components=None):
    """Counts (n_components, n_classes) of predicted component vs true class."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    if labels.ndim != 1 or pred.shape != labels.shape or labels.size == 0:
        raise ValueError(f"labels and pred must be 1-D, non-empty and of the same length, got shapes {labels.shape} "
                         f"and {pred.shape}")
    for name, a in (("labels", labels), ("pred", pred)):
        if not np.issubdtype(a.dtype, np.integer) or a.min() < 0:
            raise ValueError(f"{name} must be non-negative integers, got dtype {a.dtype} with minimum {a.min()}")
    labels, pred = labels.astype(int), pred.astype(int)
    kc = n_classes or int(labels.max()) + 1
    kp = n_components or int(pred.max()) + 1
    table = np.zeros((kp, kc), dtype=np.int64)
    np.add.at(table, (pred, labels), 1)
    return table


def component_to_class(labels, pred, n_components=None):
    """Map from component to class by the optimal one-to-one matching (-1 for unmatched components)."""
    table = contingency(labels, pred, n_components=n_components)
    r, c = match_components(table, maximize=True)
    mapping = np.full(table.shape[0], -1)
    mapping[r] = c
    return mapping


def matched_accuracy(labels, pred, n_components=None) -> float:
    """Accuracy after matching components to classes one-to-one (Hungarian on the contingency table)."""
    table = contingency(labels, pred, n_components=n_components)
    r, c = match_components(table, maximize=True)
    return float(table[r, c].sum() / table.sum())
