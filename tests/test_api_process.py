"""The API process stays light: it never imports TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from core.settings import ROOT

PROBE = """
import sys
from core.settings import load_settings
from service.app import create_app
app = create_app(load_settings(database_url="sqlite:///{db}", broker_url="sqla+sqlite:///{broker}"))
c = app.test_client()
c.get("/openapi.json"); c.get("/v1/datasets"); c.get("/readyz")
c.post("/v1/jobs", json={{"dataset": {{"name": "iris"}}, "model": {{"input_shape": [4], "layers": []}}}})
heavy = sorted(m for m in ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "sklearn", "h5py",
                           "matplotlib") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_api_never_imports_tensorflow(tmp_path):
    code = PROBE.format(db=tmp_path / "t.sqlite", broker=tmp_path / "b.sqlite")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stdout, out.stdout
