"""Batch selection: rank by uncertainty, keep a budget, make the batch diverse.

Three steps, each a pure function of arrays and a seeded ``np.random.Generator``:

1. :func:`candidates`: walk the pool in descending score and keep the top ``m * budget`` images,
   skipping near-duplicates (embedding distance below ``dup_eps`` to a kept one);
2. :func:`k_center_greedy`: from the candidates pick ``budget`` images, each the farthest (in embedding
   space) from everything already picked or labeled;
3. :func:`class_balance_weights` (optional): multiply scores of images whose predicted classes are rare in
   the labeled set.

Without a trained model (or with too few labels) uncertainty means little: :func:`cold_start` orders the
pool by diversity alone.

Example:
    >>> import numpy as np
    >>> emb = np.eye(4, dtype=np.float32)
    >>> select_batch(np.array([0.9, 0.8, 0.1, 0.5]), emb, budget=2).tolist()
    [0, 1]
"""

from __future__ import annotations

import numpy as np

DEFAULT_CANDIDATE_FACTOR = 4
DEFAULT_DUP_EPS = 0.02


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) Euclidean distances between rows of ``a`` and ``b``."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(d2, 0.0, None))


def k_center_greedy(
    emb: np.ndarray,
    k: int,
    covered: np.ndarray | None = None,
    first: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Greedy k-center: repeatedly pick ``argmax_i min_j ||e_i - c_j||`` over the centres ``c`` so far.

    Args:
        emb: (N, D) embeddings to pick from.
        k: how many to pick (at most N).
        covered: (M, D) embeddings already covered (e.g. labeled images); may be empty.
        first: index to start with when nothing is covered; default: a random one from ``rng``.
        rng: seeded generator (used only to choose ``first``).

    Returns:
        (min(k, N),) indices in the order picked.
    """
    n = len(emb)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    emb = emb.astype(np.float64)
    picked: list[int] = []
    if covered is not None and len(covered):
        min_d = _dist(emb, covered.astype(np.float64)).min(1)
    else:
        start = first if first is not None else int((rng or np.random.default_rng(0)).integers(n))
        picked.append(start)
        min_d = _dist(emb, emb[start : start + 1])[:, 0]
    while len(picked) < k:
        min_d[picked] = -1.0
        nxt = int(np.argmax(min_d))
        picked.append(nxt)
        min_d = np.minimum(min_d, _dist(emb, emb[nxt : nxt + 1])[:, 0])
    return np.asarray(picked, np.int64)


def candidates(scores: np.ndarray, emb: np.ndarray, n: int, dup_eps: float = DEFAULT_DUP_EPS) -> np.ndarray:
    """Top-``n`` indices by descending score, skipping any image within ``dup_eps`` of one already kept."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if len(kept) >= n:
            break
        if kept and _dist(emb[i : i + 1], emb[kept]).min() < dup_eps:
            continue
        kept.append(int(i))
    return np.asarray(kept, np.int64)


def class_balance_weights(
    image_classes: list[np.ndarray], labeled_counts: np.ndarray, strength: float = 0.5
) -> np.ndarray:
    """Score multipliers that favour images with classes rare in the labeled set.

    ``w_img = 1 + strength * max_{c in classes(img)} (1 - n_c / max_c' n_c')`` with ``n_c`` the labeled box
    count of class ``c``; an image with no predicted class gets 1.
    """
    n = np.asarray(labeled_counts, np.float64)
    rarity = 1.0 - n / max(n.max(), 1.0)
    return np.array([1.0 + strength * (rarity[c].max() if len(c) else 0.0) for c in image_classes])


def select_batch(
    scores: np.ndarray,
    emb: np.ndarray,
    budget: int,
    factor: int = DEFAULT_CANDIDATE_FACTOR,
    labeled_emb: np.ndarray | None = None,
    diversity: bool = True,
    dup_eps: float = DEFAULT_DUP_EPS,
) -> np.ndarray:
    """Pick ``budget`` images: top ``factor * budget`` distinct candidates by score, then k-center greedy.

    The first pick is the most uncertain candidate (unless labeled images are given, which then act as
    already-covered centres). With ``diversity=False`` it is the plain top-``budget`` by score.

    Returns:
        indices into the pool, in the order picked.
    """
    if budget <= 0 or len(scores) == 0:
        return np.zeros(0, np.int64)
    if not diversity:
        return np.argsort(-scores, kind="stable")[:budget].astype(np.int64)
    cand = candidates(scores, emb, max(budget, factor * budget), dup_eps)
    picked = cand[k_center_greedy(emb[cand], budget, covered=labeled_emb, first=0)]
    if len(picked) < budget:  # fewer distinct images than the budget: fill up by score, duplicates last
        rest = [i for i in np.argsort(-scores, kind="stable") if i not in set(picked.tolist())]
        picked = np.concatenate([picked, np.asarray(rest[: budget - len(picked)], np.int64)])
    return picked


def cold_start(emb: np.ndarray, budget: int, seed: int = 0, labeled_emb: np.ndarray | None = None) -> np.ndarray:
    """Order by diversity alone (k-center greedy from a seeded random start): for a pool with no useful model."""
    return k_center_greedy(emb, budget, covered=labeled_emb, rng=np.random.default_rng(seed))
