"""Optimizers exported by `optsearch export --register` (generated from exported.json; do not edit)."""

from __future__ import annotations

from discovered.quickstart_example import QuickstartExample

# name -> (class, default keywords for the conformance suite, treats matrices as matrices)
EXPORTED = {
    'QuickstartExample': (QuickstartExample, {'lr': 0.263}, True),
}
