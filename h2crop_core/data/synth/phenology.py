"""Crop families as PROSAIL traits over a year: the archetypes, how a taxonomy's classes are matched to them,
how a class departs from its parent, and the PROSAIL inputs of a class in each month.

A class is a vector of *traits* (:data:`TRAITS`): the dates of its season in months from 1 January
(sowing, green-up, senescence, harvest, the autumn decline of perennials, a mowing cut), the leaf area it
reaches, the greenness of its leaves out of season, its leaf angle, the leaf biochemistry of PROSPECT-D
(chlorophyll ``cab``, carotenoids ``car``, anthocyanins ``ant``, water ``cw``, dry matter ``cm``, structure
``n``, brown pigment ``cbrown`` once senescent) and its soil (brightness ``rsoil``, dryness ``psoil``, and how
much brighter the straw or stubble left after harvest makes it). :func:`prosail_inputs` turns the traits into
the inputs of ``prosail.run_prosail`` month by month with a double-logistic season (Beck et al. 2006, Remote
Sens. Environ. 100:321): leaf area rises at green-up and falls at harvest or in the autumn, chlorophyll and
water fade and brown pigment appears after senescence, and between crops the field is bare soil.

The archetypes' numbers are typical values for western-European crops from the PROSAIL literature
(Jacquemoud et al. 2009, Remote Sens. Environ. 113:S56; Féret et al. 2017, ibid. 193:204 for PROSPECT-D's
pigments) and the crop calendars of northern France (winter cereals sown in October and harvested in July,
maize sown in late April and harvested in October). They are a generated world's, not measurements.
"""

from __future__ import annotations

import re

import numpy as np

#: the traits of a class, in the order of a trait vector
TRAITS = (
    "sow", "greenup", "senescence", "harvest", "decline", "cut", "rise", "lai_min", "lai_max", "g_min", "g_end",
    "ala", "cab", "car", "ant", "cw", "cm", "n", "cbrown", "hspot", "rsoil", "psoil", "residue",
)  # fmt: skip
T = {name: i for i, name in enumerate(TRAITS)}
#: the dates (months) that a class's timing shifts together
TIMING = np.array([T[name] for name in ("sow", "greenup", "senescence", "harvest", "decline", "cut")])
#: the inputs of ``prosail.run_prosail`` that vary by class and month, in the order of an input vector
PROSAIL_INPUTS = ("n", "cab", "car", "cbrown", "cw", "cm", "ant", "lai", "lidfa", "hspot", "rsoil", "psoil")
P = {name: i for i, name in enumerate(PROSAIL_INPUTS)}
#: the least value of the leaf inputs n .. ant (PROSPECT's domain: a leaf has at least one layer, some pigment)
LEAF_FLOOR = np.array([1.0, 0.5, 0.2, 0.0, 0.001, 0.001, 0.0])
#: the brightest soil (a factor on PROSAIL's dry soil spectrum, 0.22 at 450 nm to 0.51 at 1,600 nm)
RSOIL_MAX = 1.2

#: a perennial green canopy; every archetype changes some of these (dates in months from 1 January,
#: -99 / 99: never; cab, car, ant in µg/cm², cw in cm, cm in g/cm², ala in degrees)
_DEFAULT = dict(
    sow=-99.0, greenup=3.0, senescence=9.5, harvest=99.0, decline=10.0, cut=-99.0, rise=0.5, lai_min=0.5,
    lai_max=3.0, g_min=0.4, g_end=0.4, ala=55.0, cab=40.0, car=9.0, ant=1.0, cw=0.015, cm=0.005, n=1.6,
    cbrown=1.0, hspot=0.1, rsoil=1.0, psoil=0.5, residue=0.0,
)  # fmt: skip
#: an annual crop: bare soil before sowing and after harvest, leaves that die off before harvest
_ANNUAL = dict(lai_min=0.0, g_min=1.0, g_end=0.0, decline=99.0, residue=0.3)
ARCHETYPES: dict[str, dict[str, float]] = {
    # sown in October, tillers over winter, grows from March, yellows in late June, harvested in July
    "winter_cereal": dict(_ANNUAL, sow=-2.5, greenup=2.7, senescence=5.7, harvest=6.7, lai_min=0.8, lai_max=5.0,
                          g_min=0.75, ala=62.0, cab=45.0, ant=1.2, cw=0.014, n=1.5, cbrown=1.2, hspot=0.08, residue=0.35),
    "winter_oilseed": dict(_ANNUAL, sow=-3.8, greenup=2.2, rise=0.45, senescence=5.4, harvest=6.3, lai_min=1.4,
                           lai_max=4.2, g_min=0.8, ala=45.0, cab=52.0, car=11.0, ant=1.5, cw=0.018, cm=0.0045, n=1.7, cbrown=0.9),
    "spring_crop": dict(_ANNUAL, sow=2.3, greenup=4.0, rise=0.4, senescence=6.3, harvest=7.3, lai_max=3.8, cab=42.0),
    # maize, sunflower, soy: sown late April, closes its canopy in July, harvested in October
    "summer_crop": dict(_ANNUAL, sow=3.9, greenup=6.0, rise=0.45, senescence=8.6, harvest=9.5, lai_max=4.6,
                        ala=58.0, cab=52.0, car=10.0, cw=0.016, cm=0.006, n=1.45, cbrown=1.3, residue=0.25),
    # beet, potato: planophile, succulent leaves, little residue
    "root_crop": dict(_ANNUAL, sow=3.3, greenup=5.3, senescence=8.7, harvest=9.7, lai_max=4.0, ala=38.0,
                      cab=48.0, car=10.0, cw=0.022, cm=0.0045, n=1.7, cbrown=0.8, residue=0.05),
    # market gardening: short, irrigated (moist soil), sparse
    "vegetable": dict(_ANNUAL, sow=3.2, greenup=4.6, rise=0.4, senescence=6.8, harvest=7.4, lai_max=2.6,
                      ala=42.0, cw=0.021, cm=0.004, rsoil=1.1, psoil=0.3, residue=0.05),
    # sown grass and forage: green all year, mown in early June
    "temporary_grass": dict(greenup=2.4, rise=0.6, senescence=9.6, decline=10.2, cut=5.2, lai_min=1.3,
                            lai_max=3.8, g_min=0.6, g_end=0.6, ala=58.0, car=8.5, cw=0.016, cm=0.0048, cbrown=0.4),
    "grassland": dict(greenup=2.6, rise=0.7, senescence=9.4, lai_min=1.1, lai_max=3.2, g_min=0.55, g_end=0.55,
                      cab=36.0, car=8.0, cw=0.014, cm=0.0052, n=1.65, cbrown=0.6),
    # orchards and vineyards: leaves from budburst in April to leaf fall, soil between the rows
    "permanent": dict(greenup=3.9, senescence=9.3, lai_min=0.25, lai_max=1.8, g_min=0.1, g_end=0.1, ala=45.0,
                      ant=2.0, cw=0.013, cm=0.0075, n=1.85, cbrown=1.6, hspot=0.3, rsoil=1.1, psoil=0.75),
    # deciduous woodland: bark and litter in winter (brown), a dense canopy in summer
    "forest": dict(greenup=3.6, rise=0.4, senescence=9.6, decline=10.3, lai_min=1.3, lai_max=5.0, g_min=0.12,
                   g_end=0.12, ala=50.0, cab=42.0, car=10.0, cw=0.012, cm=0.0105, n=1.9, cbrown=2.0, hspot=0.5,
                   rsoil=0.7, psoil=0.25),
    # weeds that dry up in summer over bright soil
    "fallow": dict(greenup=2.8, rise=0.7, senescence=6.9, decline=10.5, lai_min=0.4, lai_max=1.6, g_min=0.45,
                   g_end=0.25, ala=50.0, cab=32.0, car=7.5, cw=0.012, cm=0.0062, n=1.7, cbrown=1.3, rsoil=1.2, psoil=0.7),
    "unmaintained": dict(greenup=3.2, rise=0.6, senescence=9.0, decline=10.5, lai_min=1.0, lai_max=2.6, g_min=0.35,
                         g_end=0.3, ala=48.0, cab=36.0, car=8.5, ant=1.8, cw=0.013, cm=0.0085, n=1.8, cbrown=1.1, rsoil=0.9),
    "wetland": dict(greenup=3.5, senescence=8.9, lai_min=0.7, lai_max=3.4, g_min=0.3, g_end=0.3, ala=62.0,
                    cw=0.02, cm=0.0055, cbrown=1.2, rsoil=0.6, psoil=0.05),
    # class 0: bright dry bare ground, tracks and built surfaces with a few weeds in spring
    "background": dict(greenup=3.3, decline=7.3, lai_min=0.0, lai_max=0.3, g_min=0.5, g_end=0.3, cab=30.0,
                       rsoil=1.15, psoil=0.8),
}  # fmt: skip
#: level-1 names -> family (first match wins: "permanent_crops" is permanent, not arable)
LEVEL1_PATTERNS = (
    (r"permanent|perennial|orchard|vine|olive|fruit|nurser", "permanent"),
    (r"grass|pasture|meadow", "grassland"),
    (r"forest|tree|wood", "forest"),
    (r"fallow", "fallow"),
    (r"unmaintained|shrub|scrub", "unmaintained"),
    (r"wetland|marsh|reed", "wetland"),
    (r"arable|crop|cereal", "arable"),
)
#: level-1 families in the order unmatched names take them; "arable" sends its level-2 classes to crop types
FAMILIES = ("arable", "grassland", "permanent", "forest", "fallow", "unmaintained", "wetland")
#: level-2 names under an arable family -> crop type ("pseudocereal" before "cereal", roots before fodder)
ARABLE_PATTERNS = (
    (r"maize|corn|sunflower|soy|sorghum|millet|tomato|capsicum|aubergine|cucurbit|tobacco|hemp|rice|pseudo", "summer_crop"),
    (r"rape|colza|oilseed|brassic", "winter_oilseed"),
    (r"cereal|wheat|barley|rye|triticale|oat|spelt", "winter_cereal"),
    (r"potato|beet|root", "root_crop"),
    (r"legume|pulse|pea|bean|protein|flax|allium|onion", "spring_crop"),
    (r"grass|fodder|clover|alfalfa|lucerne|harvested_green|forage", "temporary_grass"),
    (r"fallow", "fallow"),
    (r"vegetable|salad|lettuce|celery|fennel|artichoke|strawberr|flower|herb|sage", "vegetable"),
)  # fmt: skip
#: the crop types, the most grown in France first (the order unmatched arable classes take them in)
CROP_TYPES = (
    "winter_cereal",
    "summer_crop",
    "winter_oilseed",
    "temporary_grass",
    "spring_crop",
    "root_crop",
    "vegetable",
)

#: how a class departs from its parent, per level 1-4: (relative?, sd per level, lower bound, upper bound);
#: relative traits are multiplied by exp(N(0, sd)), the others get N(0, sd) added
SPREAD = {
    "rise": (True, (0.1, 0.15, 0.1, 0.05), 0.25, 1.5),
    "lai_min": (True, (0.15, 0.2, 0.1, 0.06), 0.0, 3.0),
    "lai_max": (True, (0.1, 0.15, 0.1, 0.06), 0.3, 7.0),
    "g_min": (False, (0.05, 0.08, 0.05, 0.03), 0.05, 1.0),
    "ala": (False, (3.0, 7.0, 4.0, 2.5), 20.0, 80.0),
    "cab": (True, (0.08, 0.15, 0.1, 0.07), 10.0, 90.0),
    "car": (True, (0.08, 0.15, 0.1, 0.07), 2.0, 20.0),
    "ant": (False, (0.2, 0.4, 0.3, 0.2), 0.0, 8.0),
    "cw": (True, (0.08, 0.15, 0.1, 0.07), 0.004, 0.04),
    "cm": (True, (0.08, 0.15, 0.1, 0.07), 0.002, 0.02),
    "n": (True, (0.04, 0.08, 0.05, 0.03), 1.1, 2.6),
    "cbrown": (True, (0.1, 0.2, 0.12, 0.08), 0.0, 3.0),
    "hspot": (True, (0.1, 0.15, 0.1, 0.05), 0.01, 1.0),
    "rsoil": (True, (0.05, 0.12, 0.08, 0.05), 0.4, 1.25),
    "psoil": (False, (0.05, 0.12, 0.08, 0.05), 0.0, 1.0),
    "residue": (False, (0.05, 0.1, 0.06, 0.04), 0.0, 0.8),
}
#: sd (months) of a class's shift of its whole season (sowing date) per level; each date also moves by half
#: of it on its own (season length): a month between crop types, a week between varieties
TIMING_SD = (0.4, 0.7, 0.35, 0.2)
_SPREAD_INDEX = np.array([T[name] for name in SPREAD])
_RELATIVE = np.array([spread[0] for spread in SPREAD.values()])
_SD = np.array([spread[1] for spread in SPREAD.values()])  # (traits, 4)
_LOW = np.array([spread[2] for spread in SPREAD.values()])
_HIGH = np.array([spread[3] for spread in SPREAD.values()])


def archetype(name: str) -> np.ndarray:
    """The trait vector of archetype ``name``."""
    return np.array([ARCHETYPES[name].get(trait, _DEFAULT[trait]) for trait in TRAITS])


def match(name: str, patterns: tuple[tuple[str, str], ...]) -> str | None:
    """The family of the first pattern that ``name`` matches (case-insensitive), or None."""
    return next((family for pattern, family in patterns if re.search(pattern, name, re.IGNORECASE)), None)


def perturb(traits: np.ndarray, level: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A child of a class at ``level`` (0-3): its season shifted, its other traits drawn around the parent's
    with the level's spread times ``scale``; the dates kept in order."""
    out = traits.copy()
    sd = TIMING_SD[level] * scale
    out[TIMING] += rng.normal(0.0, sd) + rng.normal(0.0, sd / 2, len(TIMING))
    draw = rng.normal(0.0, 1.0, len(_SPREAD_INDEX)) * _SD[:, level] * scale
    values = out[_SPREAD_INDEX]
    out[_SPREAD_INDEX] = np.clip(np.where(_RELATIVE, values * np.exp(draw), values + draw), _LOW, _HIGH)
    return ordered(out)


def variation(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 6) how ``count`` fields of a class depart from it (:func:`vary`): a shift of the season (sowing
    date, about a week), factors on leaf area (crop density), chlorophyll (fertilisation), water and soil
    brightness, and a change of soil dryness. Drawn once for all classes, so that the classes' mean spectra
    differ by their traits only, not by the luck of their draws."""
    return np.stack(
        [
            rng.normal(0.0, 0.25, count),
            np.exp(rng.normal(0.0, 0.12, count)),
            np.exp(rng.normal(0.0, 0.08, count)),
            np.exp(rng.normal(0.0, 0.08, count)),
            np.exp(rng.normal(0.0, 0.08, count)),
            rng.normal(0.0, 0.08, count),
        ],
        axis=1,
    )


def vary(traits: np.ndarray, departures: np.ndarray) -> np.ndarray:
    """(len(departures), traits) the fields of one class as they vary in a region (``departures`` from
    :func:`variation`)."""
    out = np.repeat(traits[None], len(departures), axis=0)
    shift, lai, cab, cw, rsoil, psoil = departures.T
    out[:, TIMING] += shift[:, None]
    out[:, [T["lai_min"], T["lai_max"]]] *= lai[:, None]
    out[:, T["cab"]] *= cab
    out[:, T["cw"]] *= cw
    out[:, T["rsoil"]] *= rsoil
    out[:, T["psoil"]] += psoil
    out[:, _SPREAD_INDEX] = np.clip(out[:, _SPREAD_INDEX], _LOW, _HIGH)
    return np.stack([ordered(row) for row in out])


def ordered(traits: np.ndarray) -> np.ndarray:
    """``traits`` with sowing before green-up before senescence before harvest (a shifted date may not jump
    over its neighbour)."""
    out = traits.copy()
    out[T["greenup"]] = max(out[T["greenup"]], out[T["sow"]] + 0.5)
    out[T["senescence"]] = max(out[T["senescence"]], out[T["greenup"]] + 1.0)
    out[T["harvest"]] = max(out[T["harvest"]], out[T["senescence"]] + 0.4)
    return out


def prosail_inputs(traits: np.ndarray, t: np.ndarray, stage: np.ndarray | None = None) -> np.ndarray:
    """(len(t), len(PROSAIL_INPUTS)) the PROSAIL inputs of a class at times ``t`` (months from 1 January; a
    month's composite is taken at its middle, ``m + 0.5``).

    Args:
        traits: the class's trait vector.
        t: times.
        stage: (len(t), len(PROSAIL_INPUTS)) offsets added to the leaf inputs (a trait that shows only at one
            stage of the season), or None.
    """
    lai, green = _season(traits, t)
    residue = traits[T["residue"]] * _sigmoid((t - traits[T["harvest"]]) / 0.15)
    residue = residue * _sigmoid((traits[T["sow"]] + 12.0 - t) / 0.3)  # until the next sowing
    out = np.zeros((len(t), len(PROSAIL_INPUTS)))
    out[:, P["n"]] = traits[T["n"]]
    out[:, P["cab"]] = traits[T["cab"]] * (0.06 + 0.94 * green)  # chlorophyll goes first in senescence
    out[:, P["car"]] = traits[T["car"]] * (0.35 + 0.65 * green)  # carotenoids last longer (yellowing)
    out[:, P["cbrown"]] = traits[T["cbrown"]] * (1.0 - green)
    out[:, P["cw"]] = traits[T["cw"]] * (0.3 + 0.7 * green)  # senescent leaves dry out
    out[:, P["cm"]] = traits[T["cm"]]
    out[:, P["ant"]] = traits[T["ant"]]
    if stage is not None:
        out += stage
    # below a hundredth of leaf area the field is bare: PROSAIL returns the soil
    out[:, P["lai"]] = np.where(lai < 0.01, 0.0, lai)
    out[:, P["lidfa"]] = traits[T["ala"]]
    out[:, P["hspot"]] = traits[T["hspot"]]
    # straw and stubble are bright (up to about 0.6 in the SWIR, as dry straw) ...
    out[:, P["rsoil"]] = np.minimum(traits[T["rsoil"]] * (1.0 + residue), RSOIL_MAX)
    seasonal = 0.2 * np.cos(2 * np.pi * (t - 7.0) / 12.0)  # ... and dry; soils are driest in July
    out[:, P["psoil"]] = np.clip(traits[T["psoil"]] + seasonal + 0.5 * residue, 0.0, 1.0)
    out[:, :7] = np.maximum(out[:, :7], LEAF_FLOOR)
    return out


def _season(traits: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leaf area and green fraction at ``t``: of this year's season, or of the next one where it has more leaf
    area (a winter crop sown in the autumn)."""
    lai_now, green_now = _cycle(traits, t)
    lai_next, green_next = _cycle(traits, t - 12.0)
    later = lai_next > lai_now
    return np.where(later, lai_next, lai_now), np.where(later, green_next, green_now)


def _cycle(traits: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One season's double logistic: leaf area and green fraction at ``tau`` (months from its 1 January)."""
    g = {name: traits[T[name]] for name in TRAITS}
    # emergence takes some two weeks after sowing; harvest is a matter of days
    present = _sigmoid((tau - g["sow"] - 0.5) / 0.3) * _sigmoid((g["harvest"] - tau) / 0.12)
    growth = _sigmoid((tau - g["greenup"]) / g["rise"]) * _sigmoid((g["decline"] - tau) / g["rise"])
    lai = g["lai_min"] + (g["lai_max"] - g["lai_min"]) * growth
    lai = lai * (1.0 - 0.6 * np.exp(-0.5 * ((tau - g["cut"]) / 0.4) ** 2))  # a mowing cut, regrowing in weeks
    in_season = g["g_min"] + (1.0 - g["g_min"]) * _sigmoid((tau - g["greenup"] + 1.0) / 0.5)
    green = g["g_end"] + (in_season - g["g_end"]) * _sigmoid((g["senescence"] - tau) / 0.4)
    return present * lai, green


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
