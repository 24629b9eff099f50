"""Optimizers exported by `optsearch export --register` (generated from exported.json; do not edit)."""

from __future__ import annotations


# name -> (class, default keywords for the conformance suite, treats matrices as matrices)
EXPORTED = {
}
