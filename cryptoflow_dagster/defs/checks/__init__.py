"""Asset checks of the batch layers. They are declared on the bronze/silver assets that evaluate them (batch.py)."""
