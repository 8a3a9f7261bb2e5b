"""The cluster files are checked offline, as the tools that read them would: KubeRay manifests against the
operator's CRDs (unknown fields refused, as kubectl does), every `h2crop` command they run against the CLI,
the cluster-launcher config against Ray's own schema and checks, the Dockerfile against what the manifests
pull. No cluster, no Ray started."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipelines.cli.main import build_parser
from pipelines.cli.options import settings_from_args
from pipelines.settings import MapSettings, TrainSettings, TuneSettings, parse_overrides
from pipelines.sweeps.space import load_space

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO.parent / "shared" / "reference" / "kuberay"
KUBERAY = sorted((REPO / "cluster" / "kuberay").glob("*.yaml"))
LAUNCHER = REPO / "cluster" / "launcher.yaml"
DOCKERFILE = (REPO / "cluster" / "Dockerfile").read_text()
RAY_PIN = re.search(r'"ray\[[^]]*\]==(\d+\.\d+)', (REPO / "pyproject.toml").read_text()).group(1)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def strict(schema: dict) -> dict:
    """A CRD's OpenAPI schema as Draft 7 JSON Schema that refuses unknown fields, as kubectl does: every
    object schema listing `properties` without `additionalProperties` is closed, int-or-string is spelled out."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    if out.pop("x-kubernetes-int-or-string", False):
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    return out


def crd_schema(manifest: dict) -> dict:
    """The openAPIV3Schema of the manifest's kind at the version its apiVersion names."""
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS}")
    group, version = manifest["apiVersion"].split("/")
    crd = load(CRDS / f"{group}_{manifest['kind'].lower()}s.yaml")
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


def crd_errors(manifest: dict, schema: dict | None = None) -> list[str]:
    validator = jsonschema.Draft7Validator(schema or strict(crd_schema(manifest)))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def parse(command: str):
    """`h2crop ...` parsed by the real CLI parser; a parse error fails the test with argparse's message."""
    argv = shlex.split(command)
    assert argv[0] == "h2crop", command
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`{command}` does not parse: {stderr.getvalue().strip()}")


def check_settings(args) -> None:
    """Build the settings objects the command would (their checks reject out-of-range values)."""
    overrides = parse_overrides(args.set or []) if hasattr(args, "set") else {}
    if args.command == "train":
        settings_from_args(TrainSettings, args, overrides=overrides)
    elif args.command == "tune":
        settings_from_args(TuneSettings, args)
        settings_from_args(TrainSettings, args, preset="", overrides=overrides)
    elif args.command == "map":
        settings_from_args(MapSettings, args)


def launcher_commands() -> list[str]:
    """The `h2crop ...` commands of the launcher's usage comment (backslash continuations joined)."""
    comments = "\n".join(line.lstrip("# ") for line in LAUNCHER.read_text().splitlines() if line.startswith("#"))
    return re.findall(r"ray job submit .* -- +(h2crop .*)", comments.replace("\\\n", " "))


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifests_match_the_crds(path):
    assert crd_errors(load(path)) == []


@pytest.mark.parametrize(
    ("where", "field", "typo"),
    [
        ((), "headGroupSpec", "headGroupSpecs"),
        (("headGroupSpec",), "rayStartParams", "rayStartParam"),
    ],
)
def test_a_misspelled_field_is_refused(where, field, typo):
    manifest = load(REPO / "cluster" / "kuberay" / "raycluster.yaml")
    parent = manifest["spec"]
    for key in where:
        parent = parent[key]
    parent[typo] = parent.pop(field)
    assert crd_errors(manifest), f"{typo} passed validation"
    if where:  # only the closed schema catches this one: plain JSON Schema allows extra fields
        assert crd_errors(manifest, crd_schema(manifest)) == []


def test_rayjobs_run_on_the_raycluster_as_kuberay_allows():
    cluster = load(REPO / "cluster" / "kuberay" / "raycluster.yaml")
    jobs = [doc for doc in map(load, KUBERAY) if doc["kind"] == "RayJob"]
    assert {job["metadata"]["name"] for job in jobs} == {"h2crop-train", "h2crop-tune", "h2crop-map"}
    for job in [cluster, *jobs]:
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"]), "not a DNS-1035 label"
    for job in jobs:  # ValidateRayJobSpec: what clusterSelector mode refuses or ignores
        spec = job["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert not {"rayClusterSpec", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "suspend"} & spec.keys()
        assert spec.get("backoffLimit", 0) == 0 and spec.get("submissionMode") != "SidecarMode"
    workers = cluster["spec"]["workerGroupSpecs"][0]
    assert cluster["spec"]["enableInTreeAutoscaling"] and workers["minReplicas"] == 0 < workers["maxReplicas"]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize("path", [p for p in KUBERAY if "rayjob" in p.name], ids=lambda p: p.name)
def test_rayjob_entrypoints_are_valid_h2crop_commands(path):
    args = parse(load(path)["spec"]["entrypoint"])
    assert args.command == path.stem.removeprefix("rayjob-")
    check_settings(args)
    assert args.use_gpu, "a GPU cluster's job should use the GPUs"
    if args.command == "tune":  # the space file is the image's copy of tune_spaces/
        workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE, re.M).group(1)
        load_space(REPO / Path(args.space).relative_to(workdir))


def test_launcher_commands_are_valid_h2crop_commands():
    commands = launcher_commands()
    assert {shlex.split(c)[1] for c in commands} == {"train", "map"}
    for command in commands:
        check_settings(parse(command))


def launcher_config() -> dict:
    """The launcher config as `ray up` prepares it (defaults filled in), before the provider's own steps."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(load(LAUNCHER))


def test_launcher_matches_rays_schema_and_checks():
    import ray
    from ray.autoscaler._private.util import validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load(LAUNCHER), schema)  # the file as written
    validate_config(launcher_config())  # and as `ray up` checks it


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("head_node_type", "head_node", "`head_node_type` must be one of"),  # not among available_node_types
        ("setup_command", [], "'setup_command' was unexpected"),  # a misspelled key
    ],
)
def test_launcher_mistakes_are_caught(key, value, error):
    from ray.autoscaler._private.util import validate_config

    config = {**launcher_config(), key: value}
    with pytest.raises((ValueError, jsonschema.ValidationError), match=re.escape(error)):
        validate_config(config)


def test_launcher_installs_the_project_wheel():
    config, text = load(LAUNCHER), LAUNCHER.read_text()
    assert "example.invalid" not in text
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    wheel = f"h2crop-{version}-py3-none-any.whl"  # what `pip wheel . -w dist --no-deps` writes
    remote = next(r for r, local in config["file_mounts"].items() if local == "dist")
    assert f"pip install -q {remote}/{wheel}" in config["setup_commands"]
    images = [config["docker"]["head_image"], config["docker"]["worker_image"]]
    assert all(image.startswith(f"rayproject/ray:{RAY_PIN}.") for image in images)


def images(manifest: dict) -> list[str]:
    """The container images of a RayCluster's head and worker groups."""
    spec = manifest["spec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c["image"] for group in groups for c in group["template"]["spec"]["containers"]]


def test_the_dockerfile_builds_the_images_the_manifests_pull():
    built = set(re.findall(r"^#\s+docker build -f cluster/Dockerfile -t (\S+)", DOCKERFILE, re.M))
    pulled = {image.rsplit("/", 1)[-1] for image in images(load(REPO / "cluster" / "kuberay" / "raycluster.yaml"))}
    assert built == pulled == {"h2crop:latest", "h2crop:latest-gpu"}
    assert re.search(r"^COPY .*pyproject\.toml", DOCKERFILE, re.M)
    assert re.search(r'^RUN pip install .*"\.(\[server\])?"', DOCKERFILE, re.M)
    pins = [
        dep
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if dep.startswith("torch")
    ]
    assert all(pin in DOCKERFILE for pin in pins) and len(pins) == 2
    assert f"rayproject/ray:{RAY_PIN}." in DOCKERFILE
    assert load(REPO / "cluster" / "kuberay" / "raycluster.yaml")["spec"]["rayVersion"].startswith(f"{RAY_PIN}.")


def test_no_service_listens_on_every_interface_by_default():
    """The dashboard (the job API) and MLflow bind loopback or the pod's own address, never 0.0.0.0."""
    files = [
        *sorted((REPO / "cluster").rglob("*.yaml")),
        *sorted((REPO / "cluster").glob("*.sh")),
        REPO / "cluster" / "Dockerfile",
    ]
    assert len(files) >= 7
    for path in files:
        assert "0.0.0.0" not in path.read_text(), f"{path.relative_to(REPO)} binds a service to every interface"
