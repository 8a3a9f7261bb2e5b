"""Hierarchy-consistent decoding: always a valid taxonomy path, and the most probable one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.models import decode_argmax, decode_consistent, hierarchy_disagreement
from h2crop_core.taxonomy import Taxonomy


def random_logits(taxonomy: Taxonomy, batch: int = 2, size: int = 16, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, size, size, generator=generator) * 3 for n in taxonomy.num_classes]


@pytest.fixture(params=["generated", "benchmark"])
def taxonomy(request: pytest.FixtureRequest) -> Taxonomy:
    if request.param == "generated":
        return generate_taxonomy(seed=4)
    return Taxonomy.from_csv(request.getfixturevalue("shared_taxonomy_csv"))


def test_consistent_decoding_never_yields_an_invalid_path(taxonomy: Taxonomy) -> None:
    for seed in range(3):
        logits = random_logits(taxonomy, seed=seed)
        decoded = decode_consistent(logits, taxonomy.paths)
        assert decoded.shape == (2, 4, 16, 16)
        assert taxonomy.valid_path_mask(decoded.numpy()).all()
        # random logits disagree across levels, so plain argmax does break the tree somewhere
        assert not taxonomy.valid_path_mask(decode_argmax(logits).numpy()).all()


def test_consistent_decoding_picks_the_most_probable_path(taxonomy: Taxonomy) -> None:
    logits = random_logits(taxonomy, batch=1, size=3)
    decoded = decode_consistent(logits, taxonomy.paths)
    log_probs = [torch.log_softmax(level, dim=1)[0] for level in logits]
    for y in range(3):
        for x in range(3):
            scores = [sum(float(log_probs[k][path[k], y, x]) for k in range(4)) for path in taxonomy.paths]
            best = taxonomy.paths[int(np.argmax(scores))]
            assert decoded[0, :, y, x].tolist() == best.tolist()


def test_consistent_decoding_keeps_a_confident_consistent_argmax(taxonomy: Taxonomy) -> None:
    leaves = torch.randint(0, len(taxonomy.paths), (1, 8, 8))
    paths = torch.as_tensor(taxonomy.paths)[leaves]  # (1, 8, 8, 4) valid paths
    logits = [
        torch.nn.functional.one_hot(paths[..., k], n).permute(0, 3, 1, 2).float() * 20
        for k, n in enumerate(taxonomy.num_classes)
    ]
    torch.testing.assert_close(decode_consistent(logits, taxonomy.paths), decode_argmax(logits))
    report = hierarchy_disagreement(logits, taxonomy)
    assert report["invalid_path_fraction"] == 0.0
    assert report["changed_fraction"] == [0.0] * 4


def test_disagreement_report_counts_invalid_argmax_paths() -> None:
    taxonomy = generate_taxonomy(seed=4)
    logits = random_logits(taxonomy, seed=7)
    report = hierarchy_disagreement(logits, taxonomy)
    invalid = 1 - taxonomy.valid_path_mask(decode_argmax(logits).numpy()).mean()
    assert report["invalid_path_fraction"] == pytest.approx(invalid)
    assert 0 < report["invalid_path_fraction"] <= 1
    assert all(0 <= f <= 1 for f in report["changed_fraction"])


def test_class_count_mismatch_is_an_error() -> None:
    taxonomy = generate_taxonomy(seed=4)
    logits = random_logits(taxonomy)
    logits[3] = logits[3][:, :50]
    with pytest.raises(ValueError, match="level-4"):
        decode_consistent(logits, taxonomy.paths)


def test_confidence_is_the_probability_of_the_chosen_class_or_path(taxonomy: Taxonomy) -> None:
    from h2crop_core.models.heads import decode_with_confidence

    logits = random_logits(taxonomy, batch=1, size=3, seed=5)
    ids, confidence = decode_with_confidence(logits, "argmax")
    torch.testing.assert_close(ids, decode_argmax(logits))
    torch.testing.assert_close(confidence, torch.stack([torch.softmax(level, 1).amax(1) for level in logits], 1))
    ids, confidence = decode_with_confidence(logits, "consistent", taxonomy.paths)
    torch.testing.assert_close(ids, decode_consistent(logits, taxonomy.paths))
    log_probs = [torch.log_softmax(level, dim=1)[0] for level in logits]
    for y in range(3):
        for x in range(3):  # brute force: the distribution over paths, and each level's mass through the chosen node
            scores = np.array([sum(float(log_probs[k][path[k], y, x]) for k in range(4)) for path in taxonomy.paths])
            posterior = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
            chosen = ids[0, :, y, x].numpy()
            expected = [posterior[taxonomy.paths[:, k] == chosen[k]].sum() for k in range(4)]
            np.testing.assert_allclose(confidence[0, :, y, x].numpy(), expected, rtol=1e-4, atol=1e-6)
    assert (confidence[:, 1:] <= confidence[:, :-1] + 1e-6).all(), "never more confident further down the tree"
