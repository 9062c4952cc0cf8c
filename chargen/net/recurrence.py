"""The cell-independent part of a fast recurrent layer: the time loops, their gradient, the state.

A recurrent layer here is "project the whole window's input at once, then loop only over what
depends on the previous step". That split, the loop plumbing (TensorArrays, tf.while_loop,
tf.custom_gradient, XLA) and the stateful Keras layer around it are the same for every cell;
what a cell brings is its maths for one step, forward and backward (`CellMaths`), and its
weights' shapes and initializers (chargen/net/cell.py). The stateful Keras layer around the
loops is chargen/net/fast_layer.py: `FastRecurrent("lstm", units)` is chargen's LSTM training
layer, `FastRecurrent("gru", units)` its GRU (each cell's `fast_layer`).

Why this is faster than the stock Keras layers on a CPU (they run the cell inside a while loop
and let autodiff differentiate it step by step):
- The input projection x @ kernel + bias does not depend on the recurrence, so the layer does
  it for the whole window in one big matmul; only h @ recurrent_kernel stays in the loop.
  Autodiff of that one matmul also gives d(kernel), d(bias) and d(inputs) as big matmuls.
- The recurrence has a hand-written gradient (tf.custom_gradient). The forward loop keeps, per
  step, the few local derivatives the cell's backward needs; the backward loop does one small
  matmul per step (dm_t @ U^T) plus the cell's element-wise ops, and d(recurrent_kernel) is
  ONE matmul after the loop: concat_t(h_{t-1})^T @ concat_t(dm_t), where m_t = h_{t-1} U (+ b)
  is the recurrent pre-activation. Autodiff instead does a thin (u x B) @ (B x Gu) matmul per
  step and accumulates T of them, besides differentiating every gate op.
- Both time loops are XLA-compiled on their own (jit=True, the default), even when the train
  step is not: XLA fuses each step's element-wise ops into one kernel and its small matmuls
  ran faster than TensorFlow's here. The rest of the step stays on TensorFlow's kernels, which
  beat XLA's for the big matmuls, softmax and Adam (see benchmarks/train_speed.py).

precision="bf16" (mixed precision, `--precision bf16`): every matrix product takes bfloat16
operands (the weights are cast once per call; the variables, the state, the gates, the saved
derivatives and the gradients handed to the optimizer stay float32). TensorFlow's own bf16
matmul (oneDNN) runs ~2x its fp32 one on a CPU with AVX512_BF16, but XLA:CPU converts bf16 dots
to fp32 and gains nothing (measured: benchmarks/train_speed.py, docs/performance.md). So in
bf16 the time loops run as plain TensorFlow loops whose per-step product is TensorFlow's bf16
matmul (`jit` applies to fp32 only). Calling an XLA-fused function for each step's element-wise
ops from such a loop was tried and was slower than plain TensorFlow ops (each call hands the
step to XLA's threads and back; figures in docs/performance.md).

The TensorFlow backend is required (it is the only backend this package uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

PRECISIONS = ("fp32", "bf16")


def _product(a, b, low):
    """a @ b with operands of dtype `low` (b already cast), the result in float32 (a no-op cast in fp32)."""
    return tf.cast(tf.matmul(tf.cast(a, low), b), tf.float32)


@dataclass(frozen=True)
class CellMaths:
    """What the generic loops need of a cell: one step forward and one step backward.

    Per step t, with G gate blocks of u units, and `carries` the state tensors besides h (the
    LSTM's c; none for a GRU):
      step(xp_t, m_t, h, carries) -> (h_t, carries_t, saved_t)
        xp_t (B, Gu) is the input projection, m_t = h_{t-1} U (+ recurrent bias) (B, Gu);
        saved_t is a tuple of tensors of widths `saved_widths` x u, kept for the backward.
      back(dh, d_carries, saved_t) -> (dxp_t, dm_t, dh_direct, d_carries_{t-1})
        dh is dL/dh_t in full (from the output and from step t+1); dm_t is dL/dm_t, which the
        loop turns into dL/dh_{t-1} = dm_t @ U^T (+ dh_direct when h_{t-1} also enters the step
        directly, else None). `dm_is_dxp`: the two are the same tensor (the LSTM), so the loop
        keeps only one.
    """

    name: str
    gates: int
    carries: int
    saved_widths: tuple[int, ...]
    step: Callable
    back: Callable
    dm_is_dxp: bool = False


def _forward(cell: CellMaths, xp, h0, carries0, rec, rec_bias, low=tf.float32):
    """The recurrence over the window, keeping what the backward pass needs of every step.

    A tf.while_loop rather than a Python-unrolled loop: unrolling 128 steps into the graph was
    no faster here (the executor's cost per op is the same) and took 50 s to XLA-compile.
    `low`: the per-step product's operand dtype (bfloat16 in mixed precision), its result float32.
    """
    n = tf.shape(xp)[0]
    xs = tf.TensorArray(xp.dtype, size=n).unstack(xp)
    k = cell.carries
    rec_low = tf.cast(rec, low)  # cast once per window, not per step

    def body(t, h, *rest):
        carries, hs, saved = rest[:k], rest[k], rest[k + 1:]
        m = _product(h, rec_low, low) if rec_bias is None else _product(h, rec_low, low) + rec_bias
        h, carries, keep = cell.step(xs.read(t), m, h, carries)
        return (t + 1, h, *carries, hs.write(t, h), *(ta.write(t, v) for ta, v in zip(saved, keep)))

    tas = [tf.TensorArray(xp.dtype, size=n) for _ in range(1 + len(cell.saved_widths))]
    out = tf.while_loop(lambda t, *_: t < n, body, (0, h0, *carries0, *tas), maximum_iterations=n)
    carries_last = tuple(out[2:2 + k])
    hs, *saved = (ta.stack() for ta in out[2 + k:])
    units = rec.shape[0]
    for v, width in zip([hs, *saved], (1, *cell.saved_widths)):
        v.set_shape(xp.shape[:2].concatenate([width * units]))
    return hs, carries_last, tuple(saved)


def _backward(cell: CellMaths, d_hs, d_carries_last, h0, hs, saved, rec, with_bias: bool, low=tf.float32):
    """Gradients of (xp, h0, carries0, rec[, rec_bias]) given dL/dh_t for every step and dL/d(final carries)."""
    units = rec.shape[0]
    # U^T is materialised once: matmul(..., transpose_b=True) ran 1.5-3x slower per step than
    # a plain matmul with a transposed copy (TF's CPU matmul on 2 cores, measured here).
    rec_t = tf.cast(tf.transpose(rec), low)
    n = tf.shape(d_hs)[0]
    d_hs_ta = tf.TensorArray(d_hs.dtype, size=n).unstack(d_hs)
    saved_tas = [tf.TensorArray(d_hs.dtype, size=n).unstack(v) for v in saved]
    k, two = cell.carries, not cell.dm_is_dxp

    def back(t, dh_rec, *rest):
        d_carries, outs = rest[:k], rest[k:]
        dh = d_hs_ta.read(t) + dh_rec
        dxp, dm, dh_direct, d_carries = cell.back(dh, d_carries, tuple(ta.read(t) for ta in saved_tas))
        # The only matmul per step is dm_t @ U^T; d(U) is not accumulated here (see below).
        dh_prev = _product(dm, rec_t, low) if dh_direct is None else _product(dm, rec_t, low) + dh_direct
        outs = (outs[0].write(t, dxp), outs[1].write(t, dm)) if two else (outs[0].write(t, dxp),)
        return (t - 1, dh_prev, *d_carries, *outs)

    outs = [tf.TensorArray(d_hs.dtype, size=n) for _ in range(1 + two)]
    out = tf.while_loop(lambda t, *_: t >= 0, back, (n - 1, tf.zeros_like(h0), *d_carries_last, *outs),
                        maximum_iterations=n)
    dh0, d_carries0 = out[1], tuple(out[2:2 + k])
    dxp_all, *dm_all = (ta.stack() for ta in out[2 + k:])
    dm_all = dm_all[0] if two else dxp_all
    for v in (dxp_all, dm_all):
        v.set_shape(hs.shape[:2].concatenate([cell.gates * units]))
    # d(recurrent_kernel) as ONE matmul over all steps: sum_t h_{t-1}^T dm_t.
    h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
    flat_dm = tf.reshape(dm_all, (-1, cell.gates * units))
    d_rec = tf.cast(tf.matmul(tf.cast(tf.reshape(h_prev, (-1, units)), low), tf.cast(flat_dm, low), transpose_a=True),
                    tf.float32)
    d_bias = (tf.reduce_sum(flat_dm, axis=0),) if with_bias else ()
    # dxp_t is exactly dL/d(xp_t): the input projection's gradients follow by autodiff outside.
    return (dxp_all, dh0, *d_carries0, d_rec, *d_bias)


class Recurrence:
    """A cell's recurrence over a time-major window, with its hand-written gradient.

    Calling it with xp (T, B, Gu), h0 (B, u), carries0 (a tuple of (B, u)), rec (u, Gu) and
    optionally rec_bias (Gu,) returns hs (T, B, u) and the final carries; the final h is hs[-1].
    """

    def __init__(self, cell: CellMaths):
        self.cell = cell
        # XLA fuses each step's element-wise ops into one kernel, and its small per-step matmuls
        # ran faster than TensorFlow's here: the whole LSTM train step got 1.4x faster at 2x512
        # units and 1.2x at 2x256 (2 CPU cores) with these two functions compiled. A jit_compile
        # function nested in a plain tf.function is compiled on its own; in a jit-compiled train
        # step it is simply inlined.
        def kernels(low, jit):
            def forward(*args):
                return _forward(cell, *args, low=low)

            def backward(*args):
                return _backward(cell, *args, low=low)

            # named in traces and profiles
            forward.__name__, backward.__name__ = f"{cell.name}_forward", f"{cell.name}_backward"
            return (tf.function(forward, jit_compile=jit, autograph=False),
                    tf.function(backward, jit_compile=jit, autograph=False))

        self._kernels = {(jit, "fp32"): kernels(tf.float32, jit) for jit in (False, True)}
        # In bf16 the loops stay plain TensorFlow whatever `jit` says: its bf16 matmul is the fast one.
        self._kernels[False, "bf16"] = self._kernels[True, "bf16"] = kernels(tf.bfloat16, False)

    def __call__(self, xp, h0, carries0: tuple = (), rec=None, rec_bias=None, jit: bool = True,
                 precision: str = "fp32"):
        forward, backward = self._kernels[(bool(jit), precision)]
        k, with_bias = self.cell.carries, rec_bias is not None
        if len(carries0) != k:
            raise ValueError(f"the {self.cell.name} recurrence carries {k} tensors besides h, got {len(carries0)}")

        @tf.custom_gradient
        def run(xp, h0, *rest):
            carries0, rec = rest[:k], rest[k]
            rec_bias = rest[k + 1] if with_bias else None
            # stop_gradient: nothing may differentiate through the loop itself (the gradient is
            # `grad` below), so TF must not record it; in eager mode it otherwise builds a
            # differentiable variant of the loop, which XLA refuses.
            stop = [tf.stop_gradient(v) for v in (xp, h0, *carries0, rec)]
            bias = None if rec_bias is None else tf.stop_gradient(rec_bias)
            hs, carries_last, saved = forward(stop[0], stop[1], tuple(stop[2:2 + k]), stop[-1], bias)

            def grad(d_hs, *d_carries_last):
                # d_hs: dL/dh_t for every output step (return_sequences); d_carries_last: dL/d(final
                # carries) (the final state only goes to a variable, so normally zero or None).
                d_hs = tf.zeros_like(hs) if d_hs is None else d_hs
                d_last = tuple(tf.zeros_like(c) if d is None else d for c, d in zip(carries_last, d_carries_last))
                return list(backward(d_hs, d_last, h0, hs, saved, rec, with_bias))

            return (hs, *carries_last), grad

        args = (xp, h0, *carries0, rec) + ((rec_bias,) if with_bias else ())
        out = run(*args)
        return out[0], tuple(out[1:])


_RECURRENCES: dict[str, Recurrence] = {}


def recurrence_of(cell_name: str) -> Recurrence:
    """The Recurrence of a registered cell, made once per process (its compiled loops are reused)."""
    if cell_name not in _RECURRENCES:
        from chargen.net import get_cell

        _RECURRENCES[cell_name] = Recurrence(get_cell(cell_name).maths())
    return _RECURRENCES[cell_name]
