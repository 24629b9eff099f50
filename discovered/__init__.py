"""Optimizers ready to import: the references and what searches have exported.

    from discovered import Lion, Muon, PolarGrad
"""

from discovered.lion import Lion
from discovered.muon import Muon
from discovered.polargrad import PolarGrad
from discovered.program_optimizer import ProgramOptimizer
from discovered.registry import REGISTRY, OptimizerInfo

__all__ = ["REGISTRY", "Lion", "Muon", "OptimizerInfo", "PolarGrad", "ProgramOptimizer"]
