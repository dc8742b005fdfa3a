"""The `raw` domain: bronze assets collected over REST (assets.py) and the daily collection job and schedule."""
