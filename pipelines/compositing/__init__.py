"""Monthly Sentinel-2 composites on Ray (``h2crop composite``)."""
