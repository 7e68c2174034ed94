import os
import tempfile

import pytest

os.environ.setdefault("LABCLIP_CACHE", tempfile.mkdtemp(prefix="labclip-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from labclip.testing import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _auto_precision_is_fp32():
    """``precision="auto"`` resolves to fp32 in tests on every CPU, so comparisons with fp32 references hold;
    tests of the choice pass their own capabilities."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("labclip.precision.cpu_capabilities", dict)
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from labclip import load_model

    return load_model(tiny_model_dir)
