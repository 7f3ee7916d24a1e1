"""A catalogue of malformed requests: each gets a 4xx with a useful message, none a 5xx."""
from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest

from tests import hostile_uploads
from tests.support import small_recipe

WRONG = {str: [7, None, ["x"]], bool: ["maybe", 2, None], int: ["three", 2.5, None, [1]], float: ["a tenth", None, {}],
         list: [{}, "a", 3], dict: [[], "a", 1]}


def leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, value in enumerate(node):
            yield from leaves(value, (*path, i))
    yield path, node


def replaced(path, value):
    recipe = copy.deepcopy(small_recipe())
    target = recipe
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return recipe


def removed(path):
    recipe = copy.deepcopy(small_recipe())
    target = recipe
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return recipe


def catalogue() -> list[tuple[str, dict]]:
    cases = []
    for path, value in leaves(small_recipe()):
        if not path or path[-1] in ("name",) and len(path) == 1:
            continue
        for wrong in WRONG.get(type(value), []):
            if path[-1] == "name" and wrong is None:
                continue  # a layer's name may be null (defaulted)
            cases.append((f"wrong type {'.'.join(map(str, path))}={wrong!r}", {"json": replaced(path, wrong)}))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for huge in (10**30, -(10**30), 1e308, -1):
                if path[-1] in ("seed", "l1") and huge == -1:
                    continue
                cases.append((f"out of range {'.'.join(map(str, path))}={huge}", {"json": replaced(path, huge)}))
    for path in [("dataset",), ("model",), ("model", "input_shape"), ("model", "layers"),
                 ("model", "layers", 0, "type"), ("model", "layers", 0, "units"), ("dataset", "name"),
                 ("pruning", "schedule", "final_sparsity"), ("training", "optimizer", "type")]:
        cases.append((f"missing {'.'.join(map(str, path))}", {"json": removed(path)}))
    for raw in ('{"seed": NaN}', '{"seed": Infinity}', '{"training": {"optimizer": {"type": "sgd", "learning_rate": NaN}}}',
                "[" * 100_000 + "]" * 100_000, '{"a": ' * 5000 + "1" + "}" * 5000, "{", '{"name": "x"',
                '{"name": "\\ud800"}',
                "null", "[]", '"recipe"', "42", '{"dataset": []}', "\x00\x01\x02", '{"name": "' + "é" * 300 + '"}'):
        cases.append((f"raw body {raw[:30]!r}", {"data": raw, "content_type": "application/json"}))
    for name in ("../../etc/passwd", "/etc/passwd", "digits; rm -rf /", "C:\\\\windows", "", " digits", "%2e%2e",
                 "x" * 500, "💥", "digits\x00"):
        cases.append((f"dataset name {name[:20]!r}", {"json": replaced(("dataset", "name"), name)}))
    for name in ("💥" * 300, "x" * 10_000):
        cases.append((f"long name {len(name)}", {"json": replaced(("name",), name)}))
    cases.append(("lone surrogate in a full recipe", {"data": json.dumps(small_recipe(name="\ud800")),
                                                      "content_type": "application/json"}))
    cases.append(("10 MB string", {"data": json.dumps({"name": "x" * 10_000_000}), "content_type": "application/json"}))
    for ctype in ("text/plain", "application/xml", "multipart/form-data", "application/x-www-form-urlencoded"):
        cases.append((f"content type {ctype}", {"data": json.dumps(small_recipe()), "content_type": ctype}))
    nested = small_recipe()
    nested["model"]["layers"] = [{"type": "dense", "units": 3, "regularization": {"l1": {"l1": {"l1": 1}}}}]
    cases.append(("nested object where a number goes", {"json": nested}))
    return cases


CASES = catalogue()


def test_the_catalogue_has_at_least_150_cases():
    assert len(CASES) >= 150


@pytest.mark.parametrize("kwargs", [kw for _, kw in CASES], ids=[name[:60] for name, _ in CASES])
def test_malformed_submission_is_4xx_with_a_message(client, kwargs):
    response = client.post("/v1/jobs", **kwargs)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["detail"] and body["title"]


def upload(client, data: bytes, filename: str, **form):
    return client.post("/v1/datasets", data={"file": (io.BytesIO(data), filename), **form},
                       content_type="multipart/form-data")


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


UPLOADS = [
    ("truncated npz", npz(x=np.zeros((5, 2)), y=np.zeros(5, dtype=int))[:100], "t.npz", {}),
    ("empty file", b"", "e.npz", {}),
    ("empty csv", b"", "e.csv", {"label_column": "y"}),
    ("pickled object array", npz(x=np.array([object()] * 3, dtype=object), y=np.arange(3)), "p.npz", {}),
    ("string features", npz(x=np.array([["a", "b"]] * 3), y=np.arange(3)), "s.npz", {}),
    ("negative labels", npz(x=np.zeros((3, 2)), y=np.array([-1, 0, 1])), "n.npz", {}),
    ("float labels", npz(x=np.zeros((3, 2)), y=np.array([0.5, 1, 2])), "f.npz", {}),
    ("2-d labels", npz(x=np.zeros((3, 2)), y=np.zeros((3, 2))), "l.npz", {}),
    ("1-d features", npz(x=np.zeros(3), y=np.arange(3)), "1.npz", {}),
    ("one sample", npz(x=np.zeros((1, 2)), y=np.zeros(1, dtype=int)), "o.npz", {}),
    ("x_test without y_test", npz(x=np.zeros((3, 2)), y=np.arange(3), x_test=np.zeros((2, 2))), "xt.npz", {}),
    ("x_test of another shape", npz(x=np.zeros((3, 2)), y=np.arange(3), x_test=np.zeros((2, 3)),
                                    y_test=np.arange(2)), "xs.npz", {}),
    ("inf features", npz(x=np.full((3, 2), np.inf), y=np.arange(3)), "i.npz", {}),
    ("ragged csv", b"a,b,y\n1,2,0\n1,2\n", "r.csv", {"label_column": "y"}),
    ("csv without label column", b"a,b\n1,2\n", "c.csv", {"label_column": "y"}),
    ("csv with text", b"a,y\nx,0\n", "t.csv", {"label_column": "y"}),
    ("csv not utf-8", b"a,y\n\xff\xfe,0\n", "u.csv", {"label_column": "y"}),
    ("zip bomb-ish name", b"PK\x05\x06" + b"\x00" * 18, "z.npz", {}),
    ("path-like filename", npz(x=np.zeros((3, 2)), y=np.arange(3)), "../../etc/passwd", {}),
    ("unknown extension", b"x", "model.pkl", {}),
]


@pytest.mark.parametrize("data, filename, form", [case[1:] for case in UPLOADS], ids=[c[0] for c in UPLOADS])
def test_malformed_upload_is_4xx_with_a_message(client, data, filename, form):
    response = upload(client, data, filename, **form)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.get_json()["detail"]


#: Uploads built to make the API allocate (tests/hostile_uploads.py): zip bombs, lying zip entries, headers
#: declaring many GB, unbounded labels, CSV fields and lines past every limit, names PostgreSQL cannot store.
HOSTILE_UPLOADS = hostile_uploads.cases()


def test_the_hostile_upload_catalogue_has_at_least_25_cases():
    assert len(HOSTILE_UPLOADS) >= 25


@pytest.mark.parametrize("case", HOSTILE_UPLOADS, ids=[c.name for c in HOSTILE_UPLOADS])
def test_hostile_upload_is_4xx_with_a_message(client, case):
    response = upload(client, case.data, case.filename, **case.form)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json" and response.get_json()["detail"]


@pytest.mark.parametrize("method, path", [
    ("get", "/v1/jobs/../../etc/passwd"), ("get", "/v1/jobs/not-hex"), ("get", "/v1/jobs/" + "a" * 33),
    ("get", "/v1/jobs?limit=abc"), ("get", "/v1/jobs?limit=-1"), ("get", "/v1/jobs?limit=100000"),
    ("get", "/v1/jobs?cursor=" + "A" * 300), ("get", "/v1/jobs/0123456789abcdef0123456789abcdef/model?format=exe"),
    ("get", "/v1/jobs/0123456789abcdef0123456789abcdef/history?format=xml"), ("put", "/v1/jobs"),
    ("patch", "/v1/jobs/0123456789abcdef0123456789abcdef"), ("get", "/v2/jobs"), ("delete", "/v1/datasets"),
])
def test_malformed_paths_and_queries_are_4xx(client, method, path):
    response = getattr(client, method)(path)
    assert 400 <= response.status_code < 500
    assert response.get_json()["detail"]
