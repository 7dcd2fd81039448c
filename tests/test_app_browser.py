"""The demo page in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven by Selenium opens
the page on the loopback, uploads the sample clip, waits for the timeline plot and the annotated video, checks that
nothing covers the plot's first line (the notice), that the page requested nothing outside the loopback and that
closing it removes its files, and saves a screenshot (CLIPDFER_DEMO_SCREENSHOT=docs/demo.png also writes it there, as
docs/demo.md shows it)."""

import json
import os
import shutil
import time

import pytest

from clipdfer.inference import sample_clip_path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
TIMEOUT = 60  # s, for the run; the whole test takes about 15 s on 2 CPU cores
# what is drawn over the band of the plot's picture where its notice line is (the middle of its top 8 %): every visible
# element of the plot's block but the picture and what holds it (a label ignores the mouse, so elementFromPoint
# cannot tell); the picture as drawn: object-fit contain centres it in its element
_COVERING = """
const img = document.querySelector('#plot img');
img.scrollIntoView({block: 'center'});
const r = img.getBoundingClientRect(), s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
const w = img.naturalWidth * s, h = img.naturalHeight * s;
const band = {left: r.left + (r.width - w) / 2 + 0.15 * w, right: r.left + (r.width - w) / 2 + 0.85 * w,
              top: r.top + (r.height - h) / 2, bottom: r.top + (r.height - h) / 2 + 0.08 * h};
const out = [];
for (const e of document.querySelectorAll('#plot *, #plot-caption *')) {
  if (e === img || e.contains(img) || !e.getClientRects().length) continue;
  const st = getComputedStyle(e), b = e.getBoundingClientRect();
  if (st.visibility === 'hidden' || st.opacity === '0' || !(b.width > 0 && b.height > 0)) continue;
  if (b.left < band.right && b.right > band.left && b.top < band.bottom && b.bottom > band.top)
    out.push(e.tagName + '.' + e.className + ' ' + (e.textContent || '').trim().slice(0, 40));
}
return out;
"""


def _which(names):
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


def _until(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.25)


def test_the_page_in_a_browser(tmp_path):
    browser, driver_path = _which(BROWSERS), _which(DRIVERS)
    if browser is None or driver_path is None:
        pytest.skip("Chromium is absent: apt-get install chromium chromium-driver (Debian; .ci/run does it as root)")
    pytest.importorskip("gradio", reason="the page needs Gradio: pip install 'clipdfer[demo]'")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install "
                                                                 "'clipdfer[test]'")
    from selenium.webdriver.common.by import By

    from clipdfer.app import Demo
    from clipdfer.app.analysis import UploadLimits

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,1400", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    demo = Demo("clipdfer_test", pretrained=False, temp_dir=str(tmp_path / "demo"), limits=UploadLimits(max_videos=2))
    driver = None
    try:
        url = demo.launch(block=False, quiet=True)
        assert url.startswith("http://127.0.0.1:")
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
        driver.set_page_load_timeout(TIMEOUT)
        driver.get(url)
        upload = _until(lambda: driver.find_elements(By.CSS_SELECTOR, "#videos input[type=file]"), 30, "the page")
        assert "200 MB and 300 s each" in driver.find_element(By.ID, "videos").text  # the limits, and how to cut
        hint = " ".join(driver.find_element(By.ID, "limits").text.split())
        assert "Cut it first, e.g. ffmpeg -i in.mp4 -t 60 " in hint
        upload[0].send_keys(sample_clip_path())
        _until(lambda: "87.2 KB" in driver.find_element(By.ID, "videos").text, 30, "the upload")  # its size shows
        driver.find_element(By.ID, "run").click()
        _until(lambda: driver.execute_script(
            "const i = document.querySelector('#plot img'); return i && i.complete && i.naturalWidth > 0;"),
            TIMEOUT, "the timeline plot")
        _until(lambda: driver.execute_script(
            "const v = document.querySelector('#annotated video'); return v && v.readyState >= 1;"),
            TIMEOUT, "the annotated video to load")
        assert "NOT MEANINGFUL" in driver.find_element(By.ID, "notice").text
        end = time.monotonic() + 5  # Gradio's progress overlay fades out
        while (covering := driver.execute_script(_COVERING)) and time.monotonic() < end:
            time.sleep(0.25)
        assert covering == []  # nothing hides the plot's notice line (its label did)
        assert "sample_clip.mp4" in driver.find_element(By.ID, "status").text
        assert "happiness" in driver.find_element(By.ID, "table").text
        downloads = "".join(driver.find_element(By.ID, "downloads").text.split())  # a name's parts are on two lines
        assert all(name in downloads for name in ("sample_clip.json", "sample_clip.csv", "sample_clip-annotated.mp4"))
        driver.execute_script("window.scrollTo(0, 0)")
        shot = str(tmp_path / "demo.png")
        driver.save_screenshot(shot)
        requested = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                     for e in driver.get_log("performance") if '"Network.requestWillBeSent"' in e["message"]]
        assert requested and all(u.startswith((url, "data:", "blob:")) for u in requested), [
            u for u in requested if not u.startswith((url, "data:", "blob:"))]
        sessions = [f for f in os.listdir(demo.files.root) if f.startswith("session-")]
        assert len(sessions) == 1
        driver.get("about:blank")  # the page is closed: its session's files go
        _until(lambda: not os.path.exists(os.path.join(demo.files.root, sessions[0])), 20, "the session's files")
    finally:
        if driver is not None:
            driver.quit()
        demo.close()
    assert not os.path.exists(demo.files.root)
    from PIL import Image
    image = Image.open(shot)
    assert image.size[0] == 1200
    target = os.environ.get("CLIPDFER_DEMO_SCREENSHOT")
    if target:
        image.convert("RGB").quantize(64).save(target, optimize=True)
