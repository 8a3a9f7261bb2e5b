"""What a training run reads from the dataset root: here, its input contract (carried into every checkpoint)."""

from h2crop_core.data.schema import H2CROP_SPEC
from h2crop_core.products.contract import CONTRACT_FILE, InputContract, contract_for
from h2crop_core.products.wavelengths import BENCHMARK_ENMAP_NM
from pipelines.training.context import prepare_dataset


def test_the_dataset_contract_reaches_the_training_context(writable_root):
    assert prepare_dataset(writable_root, progress=False).contract == contract_for(H2CROP_SPEC)  # synth's
    custom = InputContract(enmap_wavelengths_nm=tuple(w + 0.4 for w in BENCHMARK_ENMAP_NM), enmap_source="products")
    custom.to_json(writable_root / CONTRACT_FILE)
    assert prepare_dataset(writable_root, progress=False).contract == custom
    (writable_root / CONTRACT_FILE).unlink()  # none: the checkpoint gets the one its layout implies
    assert prepare_dataset(writable_root, progress=False).contract is None
