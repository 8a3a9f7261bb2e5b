"""Runs read back from MLflow: ``h2crop runs compare``, the hyperspectral gain and the early-season report."""
