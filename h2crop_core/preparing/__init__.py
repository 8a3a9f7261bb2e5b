"""A user's rasters and labelled parcels -> a dataset in the benchmark's layout (``h2crop prepare``).

The steps, each a module, each depending only on those before it:

* :mod:`~h2crop_core.preparing.crosswalk`: each parcel's crop code -> the taxonomy's level-4 class (HCAT3 codes
  directly, national codes through a EuroCrops-layout crosswalk), with the codes the taxonomy lacks reported.
* :mod:`~h2crop_core.preparing.labels`: parcels burnt onto a tile's pixel centres, border pixels eroded, the
  four-level label (and prior) stacks.
* :mod:`~h2crop_core.preparing.layout`: the tile grid over the S2 grid and the spatial blocks that group tiles.
* :mod:`~h2crop_core.preparing.splits`: blocks assigned to train/val/test so that every level's classes are
  spread where the blocks allow it; tiles within a buffer of a stricter split left out.
* :mod:`~h2crop_core.preparing.cutting`: one tile's S2, EnMAP, prior and labels read from the rasters (through
  the reader ``h2crop map`` uses) and written as a sample with its CRS and bounds.
"""
