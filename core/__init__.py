"""The shared bottom layer: the store, the settings, progress, logging and the small rules
that more than one package applies. It imports no other loragate package (see
docs/architecture.md for the layers; tests/unit/test_layers.py checks them)."""
