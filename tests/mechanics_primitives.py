"""The primitives AdamW and Lion are written with, and a few more: the mechanics test's space."""

from primitives import ALL

MECHANICS = ALL.subset("mechanics", ["interp", "sign", "add_scaled", "square", "sqrt", "div", "add_const",
                                     "debias", "mul", "add", "sub", "abs", "neg"])
