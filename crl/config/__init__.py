"""The one configuration of crl: typed settings with one default each (settings.py), resolved from defaults,
the model's preset, a TOML file and the command line (resolve.py)."""

from crl.config.resolve import Resolved, as_table, dumps, load_toml, parse_set, preset_for, resolve
from crl.config.settings import (
    SECTIONS,
    Backend,
    Eval,
    Generate,
    Lora,
    RunConfig,
    Sampling,
    Train,
    Verify,
    sampling_of,
)

__all__ = [
    "SECTIONS", "Backend", "Eval", "Generate", "Lora", "Resolved", "RunConfig", "Sampling", "Train", "Verify",
    "as_table", "dumps", "sampling_of", "load_toml", "parse_set", "preset_for", "resolve",
]
