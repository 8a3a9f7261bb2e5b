"""Monthly Sentinel-2 composites from L2A scenes, block by block on a target grid (no Ray here: the pipeline
in :mod:`pipelines.compositing` runs the blocks in parallel).

Modules: :mod:`~h2crop_core.compositing.grid` (the target grid and its blocks),
:mod:`~h2crop_core.compositing.block` (one block: read, mask, harmonise, composite),
:mod:`~h2crop_core.compositing.store` (finished blocks, the resume record, the monthly GeoTIFFs).
"""
