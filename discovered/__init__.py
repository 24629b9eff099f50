"""Optimizers ready to import: the references and what searches have exported.

    from discovered import Lion, Muon, PolarGrad
"""

from discovered.lion import Lion
from discovered.muon import Muon
from discovered.polargrad import PolarGrad
from discovered.program_optimizer import ProgramOptimizer
from discovered.registry import REGISTRY, OptimizerInfo
from discovered.soap import SOAP
from discovered._exported import EXPORTED

globals().update({name: entry[0] for name, entry in EXPORTED.items()})  # from discovered import <Exported>

__all__ = ["REGISTRY", "SOAP", "Lion", "Muon", "OptimizerInfo", "PolarGrad", "ProgramOptimizer", *EXPORTED]
