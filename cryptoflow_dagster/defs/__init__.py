"""The code location's Dagster definitions, one folder per domain, loaded by ``dg.load_from_defs_folder``
(definitions.py): every module here holds definitions (module-level objects, or a ``@dg.definitions`` factory where
they depend on settings); the logic they run lives outside ``defs/``."""
