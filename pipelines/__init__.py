"""Ray and the command line: composes :mod:`h2crop_core` into distributed runs.

* :mod:`pipelines.settings`: every setting and its default (the CLI is built from it);
* :mod:`pipelines.runtime`: joining or starting Ray, progress from the workers, MLflow tracking;
* :mod:`pipelines.training`: the schedule, the training steps, Ray Data input, the Ray Train run, baselines;
* :mod:`pipelines.sweeps`: search spaces, Tune sweeps over training runs, their console;
* :mod:`pipelines.runs`: runs read back from MLflow, compared and reported;
* :mod:`pipelines.mapping`: whole regions mapped through a Ray Data actor pool;
* :mod:`pipelines.cli`: the ``h2crop`` command and ``make demo``.
"""
