"""Market alert rules from one YAML file: defaults for every market, overridden per market.

```yaml
defaults:
  cooldown_s: 600
  price_move: {pct: 3.0, window_s: 300}
markets:
  "upbit:KRW-BTC":
    price_move: {pct: 2.0}
```
A rule set to ``null`` (or ``enabled: false``) under a market switches it off there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cryptoflow_core.settings import Settings, SettingsError, validate_market

# The default rules, packaged with the code location; CRYPTOFLOW_ALERT_RULES names another file.
PACKAGED_RULES = Path(__file__).resolve().parents[1] / "alert_rules.yaml"


def rules_path(settings: Settings) -> Path:
    return settings.alert_rules or PACKAGED_RULES

# rule name -> its parameters and their defaults (a rule file names only what it changes)
RULE_PARAMS: dict[str, dict[str, float]] = {
    "price_move": {"pct": 3.0, "window_s": 300},
    "volume_spike": {"z": 4.0, "bucket_s": 60, "trailing_buckets": 60, "min_buckets": 10},
    "volatility": {"percentile": 99.0, "window_bars": 15, "trailing_bars": 360, "min_history": 60},
    "kimchi_premium": {"pct": 5.0, "max_staleness_s": 300},
}
DEFAULT_COOLDOWN_S = 600.0


class RuleError(ValueError):
    """The rules file is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class MarketRules:
    exchange: str
    market: str
    cooldown_s: float
    rules: dict[str, dict[str, float]]  # enabled rules only

    def get(self, rule: str) -> dict[str, float] | None:
        return self.rules.get(rule)


@dataclass(frozen=True)
class RuleSet:
    defaults: dict[str, dict[str, float] | None]
    default_cooldown_s: float
    overrides: dict[tuple[str, str], dict[str, Any]]

    def for_market(self, exchange: str, market: str) -> MarketRules:
        override = self.overrides.get((exchange, market), {})
        cooldown = float(override.get("cooldown_s", self.default_cooldown_s))
        rules: dict[str, dict[str, float]] = {}
        for name, base in self.defaults.items():
            params = base
            if name in override:
                params = None if override[name] is None else {**(base or RULE_PARAMS[name]), **override[name]}
            if params is not None and params.get("enabled", True):
                rules[name] = {k: float(v) for k, v in params.items() if k != "enabled"}
        return MarketRules(exchange, market, cooldown, rules)


def _params(source: str, name: str, raw: Any) -> dict[str, float] | None:
    if raw is None or raw is False:
        return None
    if name not in RULE_PARAMS:
        raise RuleError(f"{source}: unknown rule {name!r}; known: {', '.join(RULE_PARAMS)}")
    if not isinstance(raw, dict):
        raise RuleError(f"{source}: rule {name!r} must be a mapping of parameters or null")
    unknown = set(raw) - set(RULE_PARAMS[name]) - {"enabled"}
    if unknown:
        raise RuleError(f"{source}: rule {name!r} has unknown parameters {sorted(unknown)}")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key == "enabled":
            out[key] = bool(value)
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise RuleError(f"{source}: {name}.{key} must be a number, got {value!r}") from None
        if out[key] < 0:
            raise RuleError(f"{source}: {name}.{key} must not be negative")
    return out


def parse_rules(doc: Any, source: str = "alert rules") -> RuleSet:
    if not isinstance(doc, dict):
        raise RuleError(f"{source}: expected a mapping with 'defaults' and 'markets'")
    raw_defaults = doc.get("defaults") or {}
    cooldown = float(raw_defaults.get("cooldown_s", DEFAULT_COOLDOWN_S))
    defaults: dict[str, dict[str, float] | None] = {}
    for name in RULE_PARAMS:
        given = raw_defaults.get(name, {}) if name in raw_defaults else None
        parsed = _params(source, name, given) if given is not None else None
        defaults[name] = None if parsed is None else {**RULE_PARAMS[name], **parsed}
    for key in set(raw_defaults) - set(RULE_PARAMS) - {"cooldown_s"}:
        raise RuleError(f"{source}: unknown rule {key!r} under defaults; known: {', '.join(RULE_PARAMS)}, cooldown_s")
    overrides: dict[tuple[str, str], dict[str, Any]] = {}
    for key, raw in (doc.get("markets") or {}).items():
        exchange, _, market = str(key).partition(":")
        try:
            validate_market(exchange, market)
        except SettingsError as exc:
            raise RuleError(f"{source}: markets.{key}: {exc} (write '<exchange>:<market>')") from None
        raw = raw or {}
        entry: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "cooldown_s":
                entry[name] = float(value)
            else:
                entry[name] = _params(f"{source}: markets.{key}", name, value)
        overrides[(exchange, market)] = entry
    return RuleSet(defaults, cooldown, overrides)


def load_rules(path: Path) -> RuleSet:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise RuleError(f"cannot read alert rules {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RuleError(f"alert rules {path} is not valid YAML: {exc}") from None
    return parse_rules(doc, str(path))
