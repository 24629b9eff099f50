"""Low-bit state: a value stored at 8 or 4 bits and read back (block-wise absmax quantisation).

    quantize8(x), quantize4(x)   the round trip: x quantised, then dequantised

The values are cut into blocks of BLOCK consecutive entries (row-major over
the core dimensions: a matrix's entries row after row, a vector's in order;
the last block may be shorter), and each block is stored as one float scale
s = max|x_i| / L and codes c_i = round(x_i / s) in [-L, L], read back as
c_i s, with L = 2^(bits-1) - 1 (127 at 8 bits, 7 at 4 bits: a signed linear
code, symmetric around zero). This is the block-wise absmax quantisation of
"Memory-efficient 4-bit preconditioned stochastic optimization" and of the
8-bit optimizers (Dettmers et al. 2022, "8-bit optimizers via block-wise
quantization"), with the simplest (linear) code book. Blocks never cross the
matrices of a batch, so each parameter (and each seed of a vmapped task) is
quantised alone.

A program stores a state register at low precision by writing it through a
quantiser, e.g. `m = quantize8(m1)` with `m1 = interp(g, m; beta)`: what
the next step reads is exactly what an implementation keeping codes and
scales would read. The interpreter keeps the dequantised values in the
parameter's dtype; the memory they stand for is what primitives.analysis's
state_bytes counts: bits/8 bytes a value plus a 4-byte scale per block.

Properties: the largest |x_i| of a block is kept exactly (up to one rounding
of the scale), zero stays zero, q(q(x)) = q(x), and q(c x) = c q(x) up to
rounding. A block with a NaN or inf reads back as NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 64  # values per scale
SCALE_BYTES = 4  # each block's scale is a float32


def levels(bits: int) -> int:
    """The largest code: 2^(bits-1) - 1 (a signed, symmetric code)."""
    return 2 ** (bits - 1) - 1


def quantize(x: Tensor, bits: int, core_ndim: int) -> Tensor:
    """x stored at `bits` bits a value (absmax scale per block of BLOCK) and read back."""
    top = levels(bits)
    batch = x.shape[: x.ndim - core_ndim]
    flat = x.reshape(*batch, -1)
    size = flat.shape[-1]
    padding = -size % BLOCK
    if padding:
        flat = torch.cat([flat, flat.new_zeros((*batch, padding))], dim=-1)
    blocks = flat.reshape(*batch, -1, BLOCK)
    scale = blocks.abs().amax(dim=-1, keepdim=True) / top
    codes = torch.clamp(torch.round(blocks / torch.where(scale > 0, scale, 1.0)), -top, top)
    return (codes * scale).reshape(*batch, -1)[..., :size].reshape(x.shape)


def stored_bytes(values: int, bits: int) -> float:
    """Bytes that `values` values take at `bits` bits, with one float32 scale per block."""
    return values * bits / 8 + SCALE_BYTES * -(-values // BLOCK)
