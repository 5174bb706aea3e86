"""Embedding-table strategies behind one lookup interface (see `interface`), chosen by TOML specs."""

from recsys.tables.interface import LookupModule, MemoryReport
from recsys.tables.registry import STRATEGIES, build_lookup, load_spec, spec_from_mapping

__all__ = ["LookupModule", "MemoryReport", "STRATEGIES", "build_lookup", "load_spec", "spec_from_mapping"]
