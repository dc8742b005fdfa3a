"""Volatility forecasts (pure logic, no Dagster, no lake): realized variance from intraday bars (``realized``), HAR-RV
(``har``), GARCH(1,1)-t (``garch``), every model's forecasts for one day (``daily``) and their out-of-sample
evaluation (``evaluation``). The lake side is ``lake_io``; the Dagster assets are in defs/gold/forecast.py.
Decisions: docs/decisions/0022-volatility-forecasts.md."""
