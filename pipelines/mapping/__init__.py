"""Mapping whole regions with a Ray Data actor pool (what ``h2crop map`` runs)."""
