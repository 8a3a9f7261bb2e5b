"""The ``h2crop`` command (:mod:`pipelines.cli.main`), its options, and ``make demo``."""
