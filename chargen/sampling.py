"""Choosing the next token from the logits: greedy, or sampled with temperature, top-k and top-p.

`pick` takes the SampleConfig as it is (the knobs travel together, from the command line or a
request down to here) and reads what picking needs of it. The numpy step that computes the
logits is chargen.net.numpy_engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from chargen.config import SampleConfig

# Below this temperature a float32 logit gap divided by it can overflow float64 (2 * 3.4e38 / 1.8e308).
_MAY_OVERFLOW = 2 * float(np.finfo(np.float32).max) / float(np.finfo(np.float64).max)


def pick(logits: np.ndarray, sample: "SampleConfig", rng: np.random.Generator) -> np.ndarray:
    """One token id per row of logits (R, V), as `sample` (a validated SampleConfig) says: greedy at
    temperature 0, else sampled at its temperature among its top_k / top_p (its length and rng_seed are
    the caller's: `rng` draws).

    The largest logit is subtracted before dividing by the temperature, so any positive
    temperature works: as it nears 0 the others' weights underflow to 0 and the pick becomes
    greedy (dividing first made 1e-320 overflow to Inf - Inf = NaN).
    """
    temperature, top_k, top_p = sample.temperature, sample.top_k, sample.top_p
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    if temperature < _MAY_OVERFLOW:  # (l - max) / T can reach -Inf: the right weight (0), without the warning
        with np.errstate(over="ignore"):
            return _pick(logits, temperature, top_k, top_p, rng)
    return _pick(logits, temperature, top_k, top_p, rng)


def _pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> np.ndarray:
    if top_k == 0 and top_p >= 1.0 and len(logits) == 1:  # one stream: 1-D calls cost less than 2-D ones
        z = logits[0].astype(np.float64)
        z -= z.max()
        z /= temperature
        cum = np.cumsum(np.exp(z, out=z))
        # searchsorted (left) counts the cum values below u: the same pick as the rows' path below
        return np.array([min(int(np.searchsorted(cum, rng.random() * cum[-1])), len(cum) - 1)])
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z /= temperature
    if top_k == 0 and top_p >= 1.0:  # the common case, in as few numpy calls as possible (it runs per character)
        cum = np.cumsum(np.exp(z, out=z), axis=-1)
        u = rng.random((cum.shape[0], 1)) * cum[:, -1:]
        return np.minimum((cum < u).sum(axis=-1), cum.shape[-1] - 1)
    if 0 < top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)  # the largest (0) is kept
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, axis=-1)
        cum = np.cumsum(sorted_p, axis=-1)
        drop_sorted = cum - sorted_p >= top_p  # keep the smallest prefix reaching top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        p = np.where(drop, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    idx = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(idx, p.shape[-1] - 1)
