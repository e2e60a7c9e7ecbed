"""Drive ``vaekit serve`` in headless Chromium as a user would: open a photo, paint a mask stroke, inpaint,
wait for the result, and take a screenshot (the README's picture, docs/serve.png).

Needs Debian's ``chromium`` and ``chromium-driver`` (Selenium drives them; nothing is downloaded).

    python scripts/serve_screenshot.py                 # writes docs/serve.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


def start_server(**options):
    """``vaekit serve`` in a thread on a free loopback port: (base url, stop function)."""
    import socket

    import uvicorn

    from vaekit.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    asgi, _ = create_app(**options)
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}/", stop


def drive(url: str, photo: Path, screenshot: Path, timeout: float = 180) -> dict:
    """Open ``photo`` in the page at ``url``, paint a stroke, inpaint, and save ``screenshot``; returns what
    the page showed: the number of result cards, whether the result image loaded, any error text."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chrome, chromedriver = browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    try:
        wait = WebDriverWait(driver, timeout)
        driver.get(url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sample option")) > 1)
        file_input = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false;", file_input)
        file_input.send_keys(str(photo))
        wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
        driver.execute_script("arguments[0].hidden = true;", file_input)
        driver.find_element(By.CSS_SELECTOR, '#tabs button[data-task="inpaint"]').click()
        viewer = driver.find_element(By.ID, "viewer")
        chain = ActionChains(driver).move_to_element_with_offset(viewer, -60, -40).click_and_hold()
        for _ in range(12):
            chain = chain.move_by_offset(10, 6)
        chain.release().perform()
        painted = driver.execute_script(
            "const m = document.getElementById('mask'); const d = m.getContext('2d')"
            ".getImageData(0, 0, m.width, m.height).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;"
        )
        driver.find_element(By.ID, "run").click()
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, ".card.active")
                or "error" in d.find_element(By.ID, "figures").get_attribute("class")
            )
        )
        wait.until(lambda d: d.execute_script("return document.getElementById('run').disabled === false"))
        loaded = driver.execute_script(
            "const a = document.getElementById('after'); return a.complete && a.naturalWidth > 0;"
        )
        cards = len(driver.find_elements(By.CSS_SELECTOR, ".card"))
        figures = driver.find_element(By.ID, "figures").text
        error = "error" in driver.find_element(By.ID, "figures").get_attribute("class")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        return {"painted_pixels": painted, "cards": cards, "result_loaded": loaded, "figures": figures, "error": error}
    finally:
        driver.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "serve.png"))
    args = ap.parse_args()
    if browser_paths() is None:
        raise SystemExit(
            "serve_screenshot: needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    from PIL import Image

    from vaekit.samples import sample_photo

    url, stop = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            photo = Path(tmp) / "chelsea.png"
            Image.fromarray(sample_photo("chelsea")).save(photo)
            shot = Path(tmp) / "shot.png"
            seen = drive(url, photo, shot)
            Image.open(shot).convert("RGB").quantize(128).save(args.output, optimize=True)
    finally:
        stop()
    print(f"{args.output}: {seen}")
    return 0 if seen["result_loaded"] and not seen["error"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
