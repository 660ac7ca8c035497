"""Fidelity metrics, the domain feature extractor, downstream classifiers, classification metrics and the
visual Turing test. Library code: takes arrays, returns values; no params, no paths."""
