"""vaekit serve: every endpoint, every bad input, the limits, a live server, a load test and a real browser."""

import asyncio
import http.client
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.serve import Busy, Worker, create_app

ROOT = Path(__file__).resolve().parents[1]


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo():
    y, x = np.mgrid[0:72, 0:96]
    img = np.stack([x * 2.5, y * 3.0, (x + y) * 1.5], axis=2)
    return np.clip(img + np.random.default_rng(0).normal(0, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    asgi, _ = create_app(max_upload_mb=1, max_pixels=200_000)
    return TestClient(asgi)


def test_denoise_returns_a_png_of_the_same_size_with_its_figures(client, photo):
    r = client.post("/api/denoise", files={"image": ("a.png", _png(photo), "image/png")}, data={"sigma": "25"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (96, 72)
    assert float(r.headers["x-vaekit-sigma"]) == 25 and r.headers["x-vaekit-sigma-estimated"] == "False"
    assert r.headers["x-vaekit-path"] == "given"
    clean = photo
    r = client.post(
        "/api/denoise?format=json",
        files={"image": ("a.png", _png(clean), "image/png")},
        data={"add_sigma": "30", "method": "gaussian", "sigma": "30"},
    )
    body = r.json()
    assert r.status_code == 200 and body["image"].startswith("data:image/png;base64,") and "noisy" in body
    assert body["figures"]["psnr"] > body["figures"]["psnr_noisy"]  # it did remove noise it was given
    up = {"image": ("a.png", _png(photo), "image/png")}
    none = client.post("/api/denoise", files=up, data={"sigma": "25", "strength": "0"})
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(none.content))), photo)  # strength 0: nothing taken out
    assert float(none.headers["x-vaekit-strength"]) == 0


def test_answers_carry_the_uploads_colour_profile_and_transparency(client, photo):
    """A Display P3 photo answered without its profile shows shifted colours beside the original."""
    import base64

    from PIL import ImageCms

    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", icc_profile=lab, quality=95)
    up = {"image": ("a.jpg", buf.getvalue(), "image/jpeg")}
    r = client.post("/api/denoise", files=up, data={"sigma": "10", "method": "gaussian"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).info.get("icc_profile") == lab
    body = client.post("/api/compensate?format=json", files=up, data={"method": "gray-world"}).json()
    decoded = base64.b64decode(body["image"].split(",", 1)[1])
    assert Image.open(io.BytesIO(decoded)).info.get("icc_profile") == lab
    r = client.post("/api/compress", files=up, data={"quality": "1"})
    assert r.status_code == 200 and r.content[4] == 2  # the .vkc keeps the profile as vaekit compress does
    back = client.post("/api/decompress", files={"image": ("a.vkc", r.content, "application/octet-stream")})
    assert Image.open(io.BytesIO(back.content)).info.get("icc_profile") == lab  # and gives it back
    r = client.post("/api/denoise", files={"image": ("a.png", _png(photo), "image/png")}, data={"sigma": "10"})
    assert "icc_profile" not in Image.open(io.BytesIO(r.content)).info  # none in, none out
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, :20] = 0
    cut = {"image": ("c.png", _png(np.dstack([photo, alpha])), "image/png")}
    r = client.post("/api/denoise", files=cut, data={"sigma": "10", "method": "gaussian"})
    back = Image.open(io.BytesIO(r.content))
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back)[..., 3], alpha)  # a cut-out stays one
    r = client.post("/api/compress", files=cut, data={"quality": "1"})
    assert r.status_code == 200 and r.content[4] == 3  # the codec keeps the plane too, losslessly
    fig = client.post("/api/compress?format=json", files=cut, data={"quality": "1", "compare": "true"}).json()
    fig = fig["figures"]  # PSNR where the cut-out shows; the classical codecs get the colour's bytes
    assert 0 < fig["alpha_bytes"] < fig["bytes"] and 15 < fig["psnr"] < 60
    assert all(c["bytes"] <= fig["bytes"] - fig["alpha_bytes"] or c["quality"] == 1 for c in fig["classical"])
    back = client.post("/api/decompress", files={"image": ("a.vkc", r.content, "application/octet-stream")})
    back = Image.open(io.BytesIO(back.content))
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back)[..., 3], alpha)
    r = client.post("/api/inpaint", files=cut, data={"detect": "transparent", "method": "telea"})
    filled = Image.open(io.BytesIO(r.content))
    assert r.status_code == 200 and filled.mode == "RGB"  # the transparent pixels were the holes
    assert np.array_equal(np.asarray(filled)[:, 20:], photo[:, 20:])
    opaque = {"image": ("a.png", _png(photo), "image/png")}
    r = client.post("/api/inpaint", files=opaque, data={"detect": "transparent"})
    assert r.status_code == 422 and "no alpha channel" in r.json()["detail"]
    r = client.post("/api/inpaint", files=cut, data={"detect": "holes"})
    assert r.status_code == 422 and "detect knows scratches and transparent" in r.json()["detail"]


def test_inpaint_with_a_mask_and_several_fills_keeps_the_known_pixels(client, photo):
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[20:40, 30:50] = 255
    files = {"image": ("a.png", _png(photo), "image/png"), "mask": ("m.png", _png(mask), "image/png")}
    r = client.post("/api/inpaint?format=json", files=files, data={"samples": "3", "method": "vae"})
    body = r.json()
    assert r.status_code == 200 and {"sample_0", "sample_1", "sample_2", "mask"} <= set(body)
    out = np.asarray(Image.open(io.BytesIO(client.post("/api/inpaint", files=files).content)))
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    r = client.post("/api/inpaint", files=files, data={"method": "telea"})
    assert r.status_code == 200 and r.headers["x-vaekit-method"] == "telea"


def test_scratch_detection_finds_a_drawn_line(client, photo):
    img = photo.copy()
    img[10:62, 47:49] = 255
    r = client.post(
        "/api/inpaint?format=json",
        files={"image": ("a.png", _png(img), "image/png")},
        data={"detect": "scratches", "method": "telea"},
    )
    assert r.status_code == 200, r.text
    found = r.json()["figures"]["hole_fraction"]
    assert 0.005 < found < 0.2


def test_compress_and_decompress_round_trip_beside_classical_codecs_at_the_same_size(client, photo):
    r = client.post("/api/compress", files={"image": ("a.png", _png(photo), "image/png")}, data={"quality": "3"})
    assert r.status_code == 200 and r.content[:4] != b"\x89PNG" and int(r.headers["x-vaekit-bytes"]) == len(r.content)
    back = client.post("/api/decompress", files={"image": ("a.vkc", r.content, "application/octet-stream")})
    assert back.status_code == 200 and Image.open(io.BytesIO(back.content)).size == (96, 72)
    body = client.post(
        "/api/compress?format=json", files={"image": ("a.png", _png(photo), "image/png")}, data={"compare": "true"}
    ).json()
    ours = body["figures"]["bytes"]
    assert 15 < body["figures"]["psnr"] < 60  # in dB against the upload, for ours and theirs alike
    codecs = {c["codec"]: c for c in body["figures"]["classical"]}
    assert set(codecs) == {"jpeg", "webp", "avif"} and body["vkc"].startswith("data:application/octet-stream")
    assert all(c["bytes"] <= ours or c["quality"] == 1 for c in codecs.values())
    assert all(15 < c["psnr"] < 60 for c in codecs.values())
    searched = client.post(
        "/api/compress?format=json", files={"image": ("a.png", _png(photo), "image/png")}, data={"effort": "1"}
    ).json()["figures"]
    assert searched["effort"] == 1 and searched["quality"] == 4 and 15 < searched["psnr"] < 60


def test_compensate_reports_what_it_did(client, photo):
    r = client.post(
        "/api/compensate", files={"image": ("a.png", _png(photo), "image/png")}, data={"method": "gray-world"}
    )
    assert r.status_code == 200 and r.headers["x-vaekit-method"] == "gray-world"
    dark = (photo * 0.4).astype(np.uint8)  # the learned method says whether it changed anything, and how sure it is
    r = client.post("/api/compensate?format=json", files={"image": ("a.png", _png(dark), "image/png")})
    f = r.json()["figures"]
    assert r.status_code == 200 and f["method"] == "vae" and 0 <= f["p_change"] <= 1 and f["changed"] in (True, False)
    assert f["changed"] == (f["p_change"] > 0.5)


def test_bad_inputs_get_one_clear_sentence_and_a_4xx(client, photo):
    img = {"image": ("a.png", _png(photo), "image/png")}
    cases = [
        ("/api/denoise", {"image": ("a.txt", b"hello, not an image", "text/plain")}, {}, 422, "not an image"),
        ("/api/denoise", {"image": ("a.png", b"", "image/png")}, {}, 422, "empty"),
        ("/api/denoise", img, {"method": "nope"}, 422, "choose one of vae"),
        ("/api/inpaint", img, {}, 422, "needs a mask"),
        ("/api/inpaint", img, {"samples": "99"}, 422, "samples"),
        ("/api/compress", img, {"effort": "9"}, 422, "effort"),
        ("/api/decompress", {"image": ("a.vkc", b"garbage", "application/octet-stream")}, {}, 422, "vkc"),
        ("/api/denoise", {"image": ("big.png", _png(np.zeros((500, 500), np.uint8)), "image/png")}, {}, 413, "limit"),
        ("/api/denoise", {"image": ("a.png", b"\0" * (2 * 2**20), "image/png")}, {}, 413, "larger than"),
    ]
    small = {"mask": ("m.png", _png(np.full((10, 10), 255, np.uint8)), "image/png")}
    cases.append(("/api/inpaint", {**img, **small}, {}, 422, "the mask is"))
    for url, files, data, status, words in cases:
        r = client.post(url, files=files, data=data)
        assert r.status_code == status, (url, data, r.text)
        detail = r.json()["detail"]
        assert words in detail and "Traceback" not in detail and "\n" not in detail, detail
    for url in ("/api/denoise?format=jpeg", "/api/compress?format=png"):  # not a PNG sent under another name
        assert client.post(url, files=img, data={"sigma": "5"}).status_code == 422, url
    assert client.get("/api/samples/nobody").status_code == 404
    assert client.get("/assets/..%2F..%2Fserve.py").status_code == 404
    assert client.get("/api/info").status_code == 200  # still answering


def test_the_page_and_the_schema(client):
    page = client.get("/")
    assert page.status_code == 200 and "/assets/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no outside request
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/denoise", "/api/inpaint", "/api/compress", "/api/decompress", "/api/compensate"} <= set(paths)
    info = client.get("/api/info").json()
    assert "telea" in info["methods"]["inpaint"] and "gray-world" in info["methods"]["compensate"]
    assert client.get("/api/samples/chelsea").headers["content-type"] == "image/png"


def test_a_full_queue_answers_503_and_a_free_worker_runs():
    class Req:
        async def is_disconnected(self):
            return False

    async def scenario():
        w = Worker(queue=0)
        assert await w.run(Req(), lambda: 7) == 7  # nothing running: no wait
        await w.lock.acquire()  # something running, nobody may wait
        with pytest.raises(Busy):
            await w.run(Req(), lambda: 8)
        w.lock.release()

    asyncio.run(scenario())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_server_refuses_a_200_mb_upload_while_reading_and_keeps_answering(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaekit", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/api/denoise")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Transfer-Encoding", "chunked")  # no size declared: the limit must count what arrives
        conn.endheaders()
        chunk = b"\0" * 2**20
        head = b'--x\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        head += b"Content-Type: image/png\r\n\r\n"
        conn.send(b"%x\r\n%s\r\n" % (len(head), head))
        try:
            for _ in range(200):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the server may close the connection once it has answered
        status = conn.getresponse().status
        assert status == 413
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/api/denoise")  # a declared size over the limit: refused before any byte
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(200 * 2**20))
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/info")
        assert conn.getresponse().status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_binding_beyond_loopback_warns(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaekit", "serve", "--host", "0.0.0.0", "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "warning" in line and "0.0.0.0" in line
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_load_test_loses_nothing_and_the_server_survives(tmp_path):
    from vaekit.bench import BENCHES

    p = BENCHES["serve"](clients=6, seconds=3, size=48, queue=2, output=str(tmp_path), quiet=True)
    assert p["lost"] == 0 and p["alive_after"] and p["by_status"].get("200", 0) > 0
    assert set(p["by_status"]) <= {"200", "503"}
    assert (tmp_path / "serve-load.json").is_file() and (tmp_path / "serve-load.md").is_file()


def test_a_real_browser_paints_a_mask_and_gets_the_fill(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from serve_screenshot import browser_paths, drive, start_server

    if browser_paths() is None:
        if os.environ.get("VAEKIT_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromium-driver are required here (VAEKIT_REQUIRE_BROWSER is set)")
        pytest.skip("needs chromium and chromium-driver")
    from vaekit.samples import sample_photo

    photo = tmp_path / "chelsea.png"
    Image.fromarray(sample_photo("chelsea")).save(photo)
    url, stop = start_server()
    try:
        seen = drive(url, photo, tmp_path / "shot.png")
    finally:
        stop()
    assert seen["painted_pixels"] > 100 and seen["result_loaded"] and not seen["error"], seen
    assert seen["cards"] >= 2  # the VAE and the classical method checked by default
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"), dtype=np.float32)
    assert shot.std() > 20  # the page rendered, not blank


def test_a_port_in_use_is_one_sentence_before_anything_starts():
    from vaekit.errors import VaekitError
    from vaekit.serve import serve

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(VaekitError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(port=port)
