import http.server
import os
import tempfile
import threading

import pytest

os.environ.setdefault("LABCLIP_CACHE", tempfile.mkdtemp(prefix="labclip-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# "auto" resolves to fp32 in the tests and in the notebooks' kernels they start (which inherit the environment),
# on every CPU kind, so comparisons with fp32 references hold; tests of the choice pass their own capabilities.
os.environ["LABCLIP_AUTO_PRECISION"] = "fp32"

from labclip.testing import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from labclip import load_model

    return load_model(tiny_model_dir)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b'{"error":"Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    """A local hub that answers "not found" to every request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
