import os
import tempfile

import pytest

os.environ.setdefault("LABCLIP_CACHE", tempfile.mkdtemp(prefix="labclip-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from labclip.testing import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from labclip import load_model

    return load_model(tiny_model_dir)
