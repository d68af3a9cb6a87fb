"""Bounds of a proportion (a box precision ``right / boxes``) from few counts: the Wilson score interval, and whether
a precision is shown below a target.

Example:
    >>> shown_below(1, 5, 0.95), shown_below(5, 5, 0.95)
    (True, False)
"""

from __future__ import annotations

import numpy as np


def wilson_interval(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson interval of a proportion ``p = right / n``: ``(centre -+ spread) / (1 + z^2/n)`` with ``centre =
    p + z^2/2n`` and ``spread = z sqrt(p (1 - p) / n + z^2 / 4n^2)`` (``z = 1.96``: two-sided 95 %); ``(0, 1)``
    when ``n = 0``.

    Example:
        >>> [round(x, 3) for x in wilson_interval(95, 100)]
        [0.888, 0.978]
    """
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n)), float((centre + spread) / (1 + z * z / n))


def wilson_lower(right: int, n: int, z: float = 1.645) -> float:
    """The one-sided 95 % Wilson lower bound of a proportion (:func:`wilson_interval`'s lower end at ``z = 1.645``);
    0 when ``n = 0``.

    Example:
        >>> round(wilson_lower(95, 100), 3)
        0.901
    """
    return wilson_interval(right, n, z)[0]


def wilson_upper(right: int, n: int, z: float = 1.645) -> float:
    """The one-sided 95 % Wilson upper bound of a proportion (:func:`wilson_interval`'s upper end at ``z = 1.645``);
    1 when ``n = 0``."""
    return wilson_interval(right, n, z)[1]


def shown_below(right: int, boxes: int, target: float) -> bool:
    """Whether a precision ``right / boxes`` is below ``target`` with 95 % confidence: ``wilson_upper < target``."""
    return wilson_upper(right, boxes) < target
