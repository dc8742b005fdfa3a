"""What every CryptoFlow process shares: settings, the landing-file contract and the sidecar's heartbeat format.

The sidecar (``streaming_sensor``), the simulator (``exchange_sim``) and the Dagster code location
(``cryptoflow_dagster``) all import this package; it imports none of them, nor Dagster
(tests/test_package_layout.py keeps it so).
"""
