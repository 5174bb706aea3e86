"""Strategy name -> lookup class, and the way from a TOML file to a built lookup module.

A plain dict: adding a strategy is one import and one entry, and the contract tests in
`tests/tables/test_contract.py` pick it up from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.config import ConfigError, from_mapping, read_toml
from recsys.data.stats import FeatureStatistics
from recsys.tables.cce import CCELookup
from recsys.tables.dhe import DHELookup
from recsys.tables.full import FullLookup
from recsys.tables.graphhash import GraphHashLookup
from recsys.tables.hashing import HashingLookup
from recsys.tables.interface import LookupModule
from recsys.tables.managed import ManagedLookup
from recsys.tables.mixed_dim import MixedDimLookup
from recsys.tables.optembed import OptEmbedLookup
from recsys.tables.pruned import PrunedLookup
from recsys.tables.qr import QRLookup
from recsys.tables.robe import RobeLookup
from recsys.tables.spec import TableSpec
from recsys.tables.tt import TTLookup
from recsys.tables.unified import UnifiedLookup

STRATEGIES: dict[str, type[LookupModule]] = {
    FullLookup.name: FullLookup,
    HashingLookup.name: HashingLookup,
    QRLookup.name: QRLookup,
    UnifiedLookup.name: UnifiedLookup,
    MixedDimLookup.name: MixedDimLookup,
    PrunedLookup.name: PrunedLookup,
    GraphHashLookup.name: GraphHashLookup,
    OptEmbedLookup.name: OptEmbedLookup,
    RobeLookup.name: RobeLookup,
    TTLookup.name: TTLookup,
    DHELookup.name: DHELookup,
    CCELookup.name: CCELookup,
    ManagedLookup.name: ManagedLookup,
}


def spec_from_mapping(values: Mapping[str, Any], where: str = "table spec") -> TableSpec:
    """Validate a table spec given as a mapping (the contents of a TOML file)."""
    strategy = values.get("strategy")
    if strategy is None:
        raise ConfigError(f"{where}: missing key 'strategy'; one of {', '.join(STRATEGIES)}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}: unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    return from_mapping(STRATEGIES[strategy].spec_type, values, f"{where} (strategy {strategy!r})")


def load_spec(path: str | Path) -> TableSpec:
    return spec_from_mapping(read_toml(path), where=str(path))


def build_lookup(spec: TableSpec, statistics: FeatureStatistics) -> LookupModule:
    """The lookup module of `spec`, sized from the training split's `statistics`."""
    lookup = STRATEGIES[spec.strategy](spec, statistics)
    if spec.init_std is not None:
        lookup.initialize_tables(spec.init_std)
    return lookup


def build_serving_lookup(
    spec: TableSpec, statistics: FeatureStatistics, shape: dict[str, int] | None = None
) -> LookupModule:
    """The empty serving form of `spec` (its `serving_shape` given), to load an exported state into."""
    return STRATEGIES[spec.strategy].serving_form(spec, statistics, shape)
