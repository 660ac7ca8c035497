"""Small helpers shared by every package: atomic writes and seed derivation. No params, no paths."""
