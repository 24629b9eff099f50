"""The language of optimizer programs: kinds, primitives, and their torch functions.

    from primitives import ALL, Kind
    polar = ALL.get("polar")
    polar(torch.randn(4, 3))
"""

from primitives.kinds import Kind, KindError, Layout
from primitives.library import ALL, ELEMENTWISE_SET, PRIMITIVE_SETS
from primitives.primitive import ConstSpec, ExecutionOptions, Primitive, PrimitiveSet, UnknownPrimitiveError

__all__ = [
    "ALL",
    "ELEMENTWISE_SET",
    "PRIMITIVE_SETS",
    "ConstSpec",
    "ExecutionOptions",
    "Kind",
    "KindError",
    "Layout",
    "Primitive",
    "PrimitiveSet",
    "UnknownPrimitiveError",
]
