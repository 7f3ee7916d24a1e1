"""A catalogue of malformed requests: each gets a 4xx with a useful message, none a 5xx."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest

from tests import hostile_uploads
from tests.support import small_recipe

WRONG = {
    str: [7, None, ["x"]],
    bool: ["maybe", 2, None],
    int: ["three", 2.5, None, [1]],
    float: ["a tenth", None, {}],
    list: [{}, "a", 3],
    dict: [[], "a", 1],
}


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
    for path in [
        ("dataset",),
        ("model",),
        ("model", "input_shape"),
        ("model", "layers"),
        ("model", "layers", 0, "type"),
        ("model", "layers", 0, "units"),
        ("dataset", "name"),
        ("pruning", "schedule", "final_sparsity"),
        ("training", "optimizer", "type"),
    ]:
        cases.append((f"missing {'.'.join(map(str, path))}", {"json": removed(path)}))
    for raw in (
        '{"seed": NaN}',
        '{"seed": Infinity}',
        '{"training": {"optimizer": {"type": "sgd", "learning_rate": NaN}}}',
        "[" * 100_000 + "]" * 100_000,
        '{"a": ' * 5000 + "1" + "}" * 5000,
        "{",
        '{"name": "x"',
        '{"name": "\\ud800"}',
        "null",
        "[]",
        '"recipe"',
        "42",
        '{"dataset": []}',
        "\x00\x01\x02",
        '{"name": "' + "é" * 300 + '"}',
    ):
        cases.append((f"raw body {raw[:30]!r}", {"data": raw, "content_type": "application/json"}))
    for name in (
        "../../etc/passwd",
        "/etc/passwd",
        "digits; rm -rf /",
        "C:\\\\windows",
        "",
        " digits",
        "%2e%2e",
        "x" * 500,
        "💥",
        "digits\x00",
    ):
        cases.append((f"dataset name {name[:20]!r}", {"json": replaced(("dataset", "name"), name)}))
    for name in ("💥" * 300, "x" * 10_000):
        cases.append((f"long name {len(name)}", {"json": replaced(("name",), name)}))
    cases.append(
        (
            "lone surrogate in a full recipe",
            {"data": json.dumps(small_recipe(name="\ud800")), "content_type": "application/json"},
        )
    )
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


# --- Strict types, NUL, experiment overrides and query strings: each a 422 naming the field -------------------

JOB = "/v1/jobs"
SOME_JOB = "/v1/jobs/0123456789abcdef0123456789abcdef"
BOOLS = [
    ("training", "diagnostics"),
    ("training", "jit_compile"),
    ("dataset", "standardize"),
    ("export", "tflite_options", "sparsity"),
]


def deep(levels: int, leaf=1):
    for _ in range(levels):
        leaf = {"a": leaf}
    return leaf


def set_path(recipe: dict, path: tuple, value) -> dict:
    target = recipe
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
    target[path[-1]] = value
    return recipe


def experiment(base: dict | None = None, **variant) -> dict:
    return {
        "name": "x",
        "base": base or small_recipe(),
        "repeats": 2,
        "variants": [{"name": "fine", "overrides": {}}, {"name": "bad", **variant}],
    }


def strict_catalogue() -> list[tuple[str, str, str, dict, list | None]]:
    """(id, method, url, request kwargs, the loc the 422 must name — or its first two items for a variant)."""
    cases = []
    for path, value in leaves(small_recipe()):
        dotted = ".".join(map(str, path))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        wrongs = [str(value), True] + ([float(value)] if isinstance(value, int) else [False])
        for wrong in wrongs:
            cases.append((f"coerced {dotted}={wrong!r}", "post", JOB, {"json": replaced(path, wrong)}, list(path)))
    for path in BOOLS:
        for wrong in ("true", 1, 0.0):
            cases.append(
                (
                    f"coerced {'.'.join(path)}={wrong!r}",
                    "post",
                    JOB,
                    {"json": set_path(small_recipe(), path, wrong)},
                    list(path),
                )
            )
    for path, text in [
        (("name",), "iris"),
        (("dataset", "name"), "iris"),
        (("model", "layers", 0, "activation"), "relu"),
        (("model", "layers", 0, "kernel_initializer"), "he_normal"),
        (("model", "layers", 0, "type"), "dense"),
        (("model", "layers", 1, "name"), "out"),
        (("training", "optimizer", "type"), "adam"),
        (("training", "loss"), "mse"),
        (("pruning", "schedule", "end_step"), "auto"),
        (("pruning", "schedule", "type"), "polynomial"),
        (("export", "formats", 0), "h5"),
    ]:
        cases.append(
            (
                f"NUL in {'.'.join(map(str, path))}",
                "post",
                JOB,
                {"json": set_path(small_recipe(), path, text + "\x00")},
                list(path),
            )
        )
    for path, text in [
        (("description",), "a\x00b"),
        (("pruning", "layers"), ["dense_0", "\x00"]),
        (("dataset", "relabel"), {"0\x00": 0}),
        (("transfer",), {"base_job_id": "\x00" * 32}),
    ]:
        loc = (
            [*path, 1]
            if path == ("pruning", "layers")
            else [*path, "0\x00"]
            if path == ("dataset", "relabel")
            else [*path, "base_job_id"]
            if path == ("transfer",)
            else list(path)
        )
        cases.append((f"NUL in {'.'.join(path)}", "post", JOB, {"json": set_path(small_recipe(), path, text)}, loc))
    cases.append(("NUL in an unknown key", "post", JOB, {"json": {**small_recipe(), "se\x00ed": 1}}, ["se\x00ed"]))
    cases.append(
        (
            "NUL as raw JSON escape",
            "post",
            JOB,
            {"data": json.dumps(small_recipe(name="a\x00")), "content_type": "application/json"},
            ["name"],
        )
    )
    cases.append(("deep description", "post", JOB, {"json": small_recipe(description=deep(800))}, ["description"]))
    cases.append(("deep unknown field", "post", JOB, {"json": {**small_recipe(), "deep": deep(900)}}, ["deep"]))
    cases.append(
        (
            "deep layer option",
            "post",
            JOB,
            {"json": small_recipe(**{"model.layers": [{"type": "dense", "units": 3, "activation": deep(700)}]})},
            ["model", "layers", 0, "activation"],
        )
    )
    # experiments: a bad variant is named by its index
    for name, overrides in [
        ("index past the layers", {"model.layers.9.units": 4}),
        ("path through a number", {"training.epochs.max": 4}),
        ("path through a string", {"dataset.name.first": "x"}),
        ("word as a list index", {"model.layers.last": {}}),
        ("unicode digit as an index", {"model.layers.٣": {}}),
        ("string for a number", {"training.batch_size": "16"}),
        ("bool for an int", {"model.layers.0.units": True}),
        ("deep override value", {"model.layers.0.activation": deep(700)}),
        ("seed over the limit", {"seed": 2**31}),
    ]:
        cases.append(
            (f"experiment: {name}", "post", "/v1/experiments", {"json": experiment(overrides=overrides)}, ["variants", 1])
        )
    for name, base in [
        ("string seed in the base", small_recipe(seed="7")),
        ("float seed in the base", small_recipe(seed=7.5)),
        ("list seed in the base", small_recipe(seed=[7])),
        ("base nested 600 deep", deep(600)),
        ("base field nested 800 deep", small_recipe(description=deep(800))),
    ]:
        cases.append((f"experiment: {name}", "post", "/v1/experiments", {"json": experiment(base=base)}, ["variants", 0]))
    for name, spec, loc in [
        ("NUL in a variant name", experiment(overrides={}) | {"variants": [{"name": "a\x00"}]}, ["variants", 0, "name"]),
        ("NUL in an override path", experiment(overrides={"seed\x00": 1}), ["variants", 1, "overrides", "seed\x00"]),
        ("string repeats", experiment(overrides={}) | {"repeats": "2"}, ["repeats"]),
        ("float repeats", experiment(overrides={}) | {"repeats": 2.0}, ["repeats"]),
        ("string target", experiment(overrides={}) | {"target_accuracy": "0.9"}, ["target_accuracy"]),
    ]:
        cases.append((f"experiment: {name}", "post", "/v1/experiments", {"json": spec}, loc))
    # query strings: an integer is its decimal digits; NUL and unknown parameters are refused
    for query, loc in [
        ("limit=2.0", "limit"),
        ("limit=1_0", "limit"),
        ("limit=%2010", "limit"),
        ("limit=%2B5", "limit"),
        ("limit=true", "limit"),
        ("limit=0x10", "limit"),
        ("limit=1e1", "limit"),
        ("limit=%00", "limit"),
        ("status=queued%00", "status"),
        ("cursor=%00", "cursor"),
        ("Limit=5", "Limit"),
    ]:
        cases.append((f"query {query}", "get", f"{JOB}?{query}", {}, [loc]))
    for query, loc in [
        ("model?format=h5%00", "format"),
        ("model?format=H5", "format"),
        ("history?format=json%00", "format"),
        ("history?format=1", "format"),
    ]:
        cases.append((f"query {query}", "get", f"{SOME_JOB}/{query}", {}, [loc]))
    return cases


STRICT_CASES = strict_catalogue()


def test_the_strict_catalogue_has_at_least_60_cases():
    assert len(STRICT_CASES) >= 60


@pytest.mark.parametrize(
    "method, url, kwargs, loc", [case[1:] for case in STRICT_CASES], ids=[case[0][:60] for case in STRICT_CASES]
)
def test_wrong_types_nul_and_bad_overrides_are_422_naming_the_field(client, method, url, kwargs, loc):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == 422, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["detail"] and body["title"]
    locs = [error["loc"] for error in body["errors"]]
    if loc[0] == "variants" and len(loc) == 2:
        assert locs[0][:2] == loc and "variant '" in body["detail"], body
    else:
        assert loc in locs, locs


def upload(client, data: bytes, filename: str, **form):
    return client.post(
        "/v1/datasets", data={"file": (io.BytesIO(data), filename), **form}, content_type="multipart/form-data"
    )


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
    (
        "x_test of another shape",
        npz(x=np.zeros((3, 2)), y=np.arange(3), x_test=np.zeros((2, 3)), y_test=np.arange(2)),
        "xs.npz",
        {},
    ),
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


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/v1/jobs/../../etc/passwd"),
        ("get", "/v1/jobs/not-hex"),
        ("get", "/v1/jobs/" + "a" * 33),
        ("get", "/v1/jobs?limit=abc"),
        ("get", "/v1/jobs?limit=-1"),
        ("get", "/v1/jobs?limit=100000"),
        ("get", "/v1/jobs?cursor=" + "A" * 300),
        ("get", "/v1/jobs/0123456789abcdef0123456789abcdef/model?format=exe"),
        ("get", "/v1/jobs/0123456789abcdef0123456789abcdef/history?format=xml"),
        ("put", "/v1/jobs"),
        ("patch", "/v1/jobs/0123456789abcdef0123456789abcdef"),
        ("get", "/v2/jobs"),
        ("delete", "/v1/datasets"),
    ],
)
def test_malformed_paths_and_queries_are_4xx(client, method, path):
    response = getattr(client, method)(path)
    assert 400 <= response.status_code < 500
    assert response.get_json()["detail"]
