"""A synthetic stand-in for the H2Crop benchmark that exercises the science, not just the shapes.

The real benchmark is 180 GB and cannot be downloaded where h2crop is developed and tested. This package
writes datasets with its exact layout, key names, dtypes and shapes, whose content behaves like it:

* parcels are convex polygons (an anisotropic Voronoi tessellation) with one crop each, background
  (hedges, tracks, non-crop land) between and among them, and a few unlabelled (255) parcels;
* crop frequencies are long-tailed (Zipf over the level-4 classes);
* each class has an S2 phenology over 12 months built down the tree: level-1 classes differ from the
  first months on, finer levels only from later months, so early windows separate fewer classes;
* each class has an EnMAP spectrum whose narrow absorption features separate sibling classes at levels
  3-4 that the S2 stream confuses (about half of the fine sibling groups look alike in S2);
* priors come from a crop-rotation process: most parcels follow their class's rotation, some keep last
  year's crop, some change at random;
* sensor noise: pixel noise, per-parcel variability, clouds in some months, noisy water-vapour bands,
  and EnMAP pixels that mix the 3×3 S2 pixels under them.

The signatures are drawn by hand by default; ``world="prosail"`` computes them with the canopy
radiative-transfer model PROSAIL from a phenology of leaf and canopy traits per class
(:mod:`~h2crop_core.data.synth.canopy`, :mod:`~h2crop_core.data.synth.phenology`, the sensors' band responses
in :mod:`~h2crop_core.data.synth.responses`), with several spectra per class that each parcel mixes in its own
proportions, and draws them in ``world.png`` (:mod:`~h2crop_core.data.synth.quicklook`).

Modules, each depending only on those after it: :mod:`~h2crop_core.data.synth.samples` (taxonomy, ``.h5``
samples, names, splits), :mod:`~h2crop_core.data.synth.region` (a georeferenced region in the format of
:mod:`h2crop_core.mapping.region`) and :mod:`~h2crop_core.data.synth.world` (the classes' signatures and the
scenes drawn from them). :mod:`~h2crop_core.data.synth.products` writes a region as delivered products
(Sentinel-2 L2A SAFE scenes with clouds, STAC ItemCollections, an EnMAP L2A product, the clean truth), from
:mod:`~h2crop_core.data.synth.s2_plan`, ``s2_sky``, ``s2_products``, ``s2_metadata``, ``scene_writer`` and
``stac_items``.
"""

from __future__ import annotations

from h2crop_core.lazy import lazy_exports

#: public name -> the submodule defining it (imported on first use: the taxonomy generator needs no rasterio)
_EXPORTS = {
    "synthesize_region": "region",
    "SynthResult": "samples",
    "sample_names": "samples",
    "synthesize_dataset": "samples",
    "write_splits": "samples",
    "generate_taxonomy": "tree",
    "SyntheticWorld": "world",
    "add_clouds": "layout",
    "voronoi_parcels": "layout",
    "gap_field": "layout",
    "WORLD_KINDS": "world",
    "canopy_world": "canopy",
    "world_quicklook": "quicklook",
    "write_products": "products",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
