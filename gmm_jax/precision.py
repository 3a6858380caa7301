"""Precision of the fused pass's matrix products: ``Config.precision``.

``"highest"`` (the default) multiplies float32 at full float32 precision on every backend.  On an accelerator two
faster modes multiply with reduced-precision operands and float32 accumulation:

* ``"default"``: the accelerator's own float32 products (``lax.Precision.DEFAULT``: TF32 on NVIDIA GPUs since
  Ampere, one bfloat16 pass on TPUs); unit roundoff of the operands 2^-11 (TF32).
* ``"bfloat16"``: operands rounded to bfloat16, products accumulated in float32; unit roundoff 2^-8.

Only the E-step's log-densities and the statistics' products of the EM loop take the reduced precision (the M-step,
initialisation, K-means and the model functions stay at full precision), and only for float32 data: float64 is
always multiplied in float64.  On a CPU the option changes nothing (XLA's CPU products are full precision), unless
``Config.emulate_precision`` is set: the operands are then rounded to the mode's mantissa
(``lax.reduce_precision``) before full-precision products, which shows on a CPU what an accelerator computes, up to
the order of the float32 sums.

The EM loop runs reduced-precision iterations while their error bound
(:func:`gmm_jax.forms.product_error_bound` with the mode's unit roundoff) is at most ``Config.precision_tol``, then
full-precision iterations until convergence: a converged fit ends at a fixed point of the full-precision EM (to
``tol``), and the reduced products only move the iterations that get it there (``docs/performance.md``,
"Precision of the products").
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from gmm_jax.config import HIGHEST, PRECISIONS, Config

_MANTISSA_BITS = {"default": 10, "bfloat16": 7}  # explicit mantissa bits of TF32 and bfloat16


class PassPrecision(NamedTuple):
    """How the pass multiplies: ``algorithm`` (JAX's ``precision=`` argument), ``operand_dtype`` (operands cast to it,
    accumulated in the inputs' dtype; None: not cast) and ``round_bits`` (emulation: operands rounded to this many
    mantissa bits, then multiplied at full precision; None: not rounded), ``unit`` (the operands' unit roundoff, for
    the error bounds)."""

    algorithm: object = HIGHEST
    operand_dtype: object = None
    round_bits: int | None = None
    unit: float | None = None  # the operands' unit roundoff (None: the data's own, full precision)

    @property
    def exact(self) -> bool:
        return self.algorithm == HIGHEST and self.operand_dtype is None and self.round_bits is None

    def _operands(self, ops):
        if self.round_bits is not None:
            return [lax.reduce_precision(a, exponent_bits=8, mantissa_bits=self.round_bits) for a in ops]
        if self.operand_dtype is not None:
            return [a.astype(self.operand_dtype) for a in ops]
        return list(ops)

    def matmul(self, a, b):
        """``jnp.matmul(a, b)`` at this precision (the result in ``a``'s dtype)."""
        x, y = self._operands((a, b))
        if self.operand_dtype is None:
            return jnp.matmul(x, y, precision=self.algorithm)
        return jnp.matmul(x, y, precision=self.algorithm, preferred_element_type=a.dtype)

    def einsum(self, subscripts: str, *operands):
        """``jnp.einsum`` at this precision (the result in the first operand's dtype)."""
        ops = self._operands(operands)
        if self.operand_dtype is None:
            return jnp.einsum(subscripts, *ops, precision=self.algorithm)
        return jnp.einsum(subscripts, *ops, precision=self.algorithm, preferred_element_type=operands[0].dtype)


EXACT = PassPrecision()


def pass_precision(config: Config, dtype) -> PassPrecision:
    """The precision of the pass's products for data of ``dtype`` under ``config`` (:data:`EXACT` for
    ``"highest"``, for float64 data, and on a CPU unless ``config.emulate_precision``)."""
    mode = config.precision
    if mode == "highest" or jnp.dtype(dtype) != jnp.float32:
        return EXACT
    unit = unit_roundoff(mode)
    if config.emulate_precision:
        return PassPrecision(round_bits=_MANTISSA_BITS[mode], unit=unit)
    if not config.accelerator:
        return EXACT
    if mode == "bfloat16":
        return PassPrecision(operand_dtype=jnp.bfloat16, unit=unit)
    return PassPrecision(algorithm=lax.Precision.DEFAULT, unit=unit)


def unit_roundoff(mode: str) -> float:
    """The unit roundoff of a reduced mode's operands (2^-(mantissa bits + 1))."""
    return 2.0 ** -(_MANTISSA_BITS[mode] + 1)


__all__ = ["EXACT", "PRECISIONS", "PassPrecision", "pass_precision", "unit_roundoff"]
