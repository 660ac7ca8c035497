"""DVC stages: one module per stage, each with a ``main()``. The only code that knows params and paths."""
