"""The `health` domain: ``ops/platform_health``, figures the UI plots over time (platform_health.py)."""
