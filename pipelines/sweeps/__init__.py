"""Sweeps on Ray Tune: search-space files, the sweep over training runs, its console and its ASHA."""
