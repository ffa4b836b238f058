"""rnnkit serve: answers, batching of concurrent requests, 4xx for every bad request, the
web page in headless Chromium (skipped with the reason when Chromium is not installed)."""

import http.client
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from rnnkit.cli import main  # noqa: E402
from rnnkit.serve import create_app  # noqa: E402
from rnnkit.tasks.classify import TextClassifier  # noqa: E402

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "spam"
    assert main(["train", "text", "--file", str(FIX / "sms_spam_tiny.tsv"), "--epochs", "2",
                 "--out", str(out), "--quiet"]) == 0
    return out


def test_predict_health_model_page_and_schema(model_dir):
    clf = TextClassifier.load(model_dir)
    with TestClient(create_app(model_dir, max_texts=4, max_chars=200, max_body=4000)) as c:
        r = c.post("/predict", json={"text": "WIN a free prize now"})
        assert r.status_code == 200
        p = r.json()["predictions"][0]
        want = clf.predict(["WIN a free prize now"])[0]
        assert p["label"] == want["label"] and abs(p["probability"] - want["probability"]) < 1e-6
        r = c.post("/predict", json={"texts": ["see you soon", "free cash prize"]})
        assert [x["label"] for x in r.json()["predictions"]] == \
            [x["label"] for x in clf.predict(["see you soon", "free cash prize"])]
        assert c.get("/health").json() == {"status": "ok"}
        info = c.get("/model").json()
        assert info["task"] == "text" and info["labels"] == clf.labels
        assert info["training"]["epochs"] == 2 and "rnnkit_version" in info
        assert "<textarea" in c.get("/").text
        assert "/predict" in c.get("/openapi.json").json()["paths"]
        bad = [(c.post("/predict", content=b"{not json"), 400),
               (c.post("/predict", json={"text": "a", "texts": ["b"]}), 422),
               (c.post("/predict", json={}), 422),
               (c.post("/predict", json={"text": "   "}), 422),
               (c.post("/predict", json={"text": 5}), 422),
               (c.post("/predict", json={"texts": []}), 422),
               (c.post("/predict", json={"texts": ["a"] * 5}), 422),
               (c.post("/predict", json={"text": "x" * 201}), 422),
               (c.post("/predict", content=b'{"text": "' + b"x" * 5000 + b'"}'), 413)]
        for r, status in bad:
            assert r.status_code == status, (r.status_code, r.text)
            assert r.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir):
    app = create_app(model_dir, max_batch=64, max_wait_ms=20)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield app, port
    srv.should_exit = True
    t.join(5)


def _post(port: int, text: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/predict", json.dumps({"text": text}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 200, body
    return body["predictions"][0]


def test_concurrent_requests_share_model_calls(server, model_dir):
    app, port = server
    texts = [f"free prize number {i} call now" if i % 2 else f"lunch at {i}?" for i in range(32)]
    before = app.state.batcher.calls
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(lambda t: _post(port, t), texts))
    calls = app.state.batcher.calls - before
    assert calls < 32, calls  # batched: fewer model calls than requests
    want = TextClassifier.load(model_dir).predict(texts)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert all(abs(g["probability"] - w["probability"]) < 1e-5
               for g, w in zip(got, want, strict=True))


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None,
                    reason="Chromium and chromedriver are not installed (Debian: chromium "
                           "chromium-driver; .ci/run installs them)")
def test_web_page_in_headless_chromium(server, model_dir):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, port = server
    browser, driver_path = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.get(f"http://127.0.0.1:{port}/")
        review = "WIN a free prize now, call to claim your cash"
        drv.find_element(By.ID, "text").send_keys(review)
        drv.find_element(By.ID, "go").click()
        WebDriverWait(drv, 20).until(lambda d: d.find_element(By.ID, "label").text != "")
        want = TextClassifier.load(model_dir).predict([review])[0]
        assert drv.find_element(By.ID, "label").text == want["label"]
        assert drv.find_element(By.ID, "prob").text.endswith("%")
    finally:
        drv.quit()


def test_serve_command_loads_the_model_once_per_process(model_dir, monkeypatch):
    """``rnnkit serve`` with one worker serves the app it built (one load of the model);
    with several, it validates the directory once and each worker loads its own."""
    import rnnkit.serve

    loads, runs = [], []
    real = rnnkit.serve.load_predictor
    monkeypatch.setattr(rnnkit.serve, "load_predictor",
                        lambda d: loads.append(d) or real(d))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    for var in ("MODEL", "MAX_BATCH", "MAX_WAIT_MS"):  # restored after: the CLI sets them
        monkeypatch.setenv(f"RNNKIT_SERVE_{var}", "")
    assert main(["serve", str(model_dir), "--port", "8799"]) == 0
    assert len(loads) == 1 and not isinstance(runs[0][0], str)
    with TestClient(runs[0][0]) as c:
        assert c.get("/health").json() == {"status": "ok"}
    loads.clear()
    assert main(["serve", str(model_dir), "--port", "8799", "--workers", "2"]) == 0
    assert len(loads) == 1 and runs[1][0] == "rnnkit.serve:app_from_env"
    assert runs[1][1]["workers"] == 2
