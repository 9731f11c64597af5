"""Hot swap on a real uvicorn server following a registry alias: many concurrent clients keep sending while the
alias moves (the poller notices): no request fails, every answer names the old or the new version and each
client sees the switch once, answers equal the answering version's ONNX Runtime outputs, and every logged row
names the version that answered. POST /admin/reload swaps at once without the poller; /v1/model carries the
version's evidence verdicts as the bundle records them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.special import softmax

from assay.evidence.bundle import read_evidence
from assay.registry import open_registry
from registry_bundles import evaluate, make_data, make_onnx
from serve_launcher import Server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("swap_registry")
    data = make_data(root / "data.npz")
    url = f"sqlite:///{root / 'registry.db'}"
    models = {}
    with open_registry(url) as reg:
        for seed, key in enumerate(("a", "b")):
            model = make_onnx(root / f"model_{key}.onnx", seed)
            bundle = evaluate(model, data, root / f"bundle_{key}")
            version = reg.register("clf", model, evidence=bundle)
            models[version.ref] = (model, bundle)
        reg.move_alias("clf", "production", 1, expected=None, action="promote")
    return url, models


def _set_alias(url: str, version: int) -> None:
    with open_registry(url) as reg:
        holder = reg.alias_holder("clf", "production")
        if holder != version:
            reg.move_alias("clf", "production", version, expected=holder, action="rollback", reason="test")


def _probabilities(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return softmax(session.run(None, {"x": x})[0].astype(np.float64), axis=1)


def test_alias_move_under_load_swaps_without_a_failed_request(registry, tmp_path: Path) -> None:
    url, models = registry
    _set_alias(url, 1)
    with Server(tmp_path, "clf@production", registry=url, poll_seconds=0.1, top_k=3) as srv:
        seen: dict[int, list[tuple[str, str, np.ndarray, dict]]] = {}
        moved = asyncio.Event()

        async def client_loop(client: httpx.AsyncClient, k: int) -> None:
            rng = np.random.default_rng(k)
            seen[k] = []
            after = 0
            while after < 5:
                x = rng.normal(size=(2, 4)).astype(np.float32)
                rid = f"c{k}-{len(seen[k])}"
                answer = await client.post("/v1/predict", json={"inputs": x.tolist()}, headers={"X-Request-ID": rid})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                seen[k].append((rid, body["model_version"], x, body))
                if body["model_version"] == "clf@2":
                    after += 1
                if moved.is_set() and len(seen[k]) > 2000:
                    raise AssertionError("the server never swapped to clf@2")

        async def mover() -> None:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(_set_alias, url, 2)
            moved.set()

        async def run() -> None:
            async with httpx.AsyncClient(base_url=srv.url, timeout=30,
                                         limits=httpx.Limits(max_connections=16)) as client:
                await asyncio.gather(mover(), *(client_loop(client, k) for k in range(16)))

        asyncio.run(run())
        rows = srv.rows()
    versions_by_request = {rid: version for answers in seen.values() for rid, version, _, _ in answers}
    assert set(versions_by_request.values()) == {"clf@1", "clf@2"}
    for answers in seen.values():
        sequence = [version for _, version, _, _ in answers]
        switch = sequence.index("clf@2")
        assert sequence[:switch] == ["clf@1"] * switch and set(sequence[switch:]) == {"clf@2"}  # switches once
        for _, version, x, body in answers[:: max(1, len(answers) // 6)] + answers[switch - 1: switch + 1]:
            probs = _probabilities(models[version][0], x)
            assert [p["class_index"] for p in body["predictions"]] == probs.argmax(axis=1).tolist()
            assert [p["confidence"] for p in body["predictions"]] == pytest.approx(probs.max(axis=1), rel=1e-5)
    logged = [r for r in rows if "model_version" in r]
    assert {r["request_id"] for r in logged} == set(versions_by_request)
    assert all(r["model_version"] == versions_by_request[r["request_id"]] for r in logged)


def test_admin_reload_swaps_at_once_and_model_names_its_evidence(registry, tmp_path: Path) -> None:
    url, models = registry
    _set_alias(url, 2)
    token_headers = {"Authorization": "Bearer swap-token-123"}
    with Server(tmp_path, "clf@production", registry=url, admin_token="swap-token-123") as srv, \
            httpx.Client(base_url=srv.url) as client:
        info = client.get("/v1/model").json()
        assert info["version"] == "clf@2"
        evidence = read_evidence(models["clf@2"][1])
        assert info["sha256"] == evidence.model.sha256
        assert info["evidence"]["sections"] == {name: sec.verdict for name, sec in evidence.sections.items()}
        assert info["evidence"]["verdict"] == evidence.verdict
        _set_alias(url, 1)
        time.sleep(0.3)
        assert client.post("/v1/predict", json={"inputs": [[0, 0, 0, 0]]}).json()["model_version"] == "clf@2"
        assert client.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
        reloaded = client.post("/admin/reload", headers=token_headers).json()
        assert reloaded["changed"] == {"primary": {"from": "clf@2", "to": "clf@1"}}
        assert client.post("/v1/predict", json={"inputs": [[0, 0, 0, 0]]}).json()["model_version"] == "clf@1"
        assert client.post("/admin/reload", headers=token_headers).json()["changed"] == {}
        metrics = client.get("/metrics").text
        assert 'assay_model_swaps_total{role="primary"} 1.0' in metrics
        assert 'assay_model_info{role="primary",sha256="' in metrics and 'version="clf@1"' in metrics
        assert 'version="clf@2"' not in metrics


def test_a_model_file_takes_its_evidence_from_a_matching_reference_bundle(registry, tmp_path: Path) -> None:
    _, models = registry
    (model_a, bundle_a), (_, bundle_b) = models["clf@1"], models["clf@2"]
    with Server(tmp_path, str(model_a), reference=str(bundle_a)) as srv:
        info = httpx.get(srv.url + "/v1/model").json()
    evidence = read_evidence(bundle_a)
    assert info["evidence"]["sections"] == {name: sec.verdict for name, sec in evidence.sections.items()}
    with Server(tmp_path, str(model_a), reference=str(bundle_b)) as srv:  # another model's bundle: not claimed
        assert httpx.get(srv.url + "/v1/model").json()["evidence"] is None
