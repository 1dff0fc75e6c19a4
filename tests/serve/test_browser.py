"""The demo and the listening page in a real browser (headless Debian chromium through Selenium): type, press,
wait for playable audio, answer, and read the answers back from the ratings file. Screenshots go to the test's
folder (and to $SONODIFF_SCREENSHOTS, which is how samples/ got its pictures)."""

import time

import numpy as np
import pytest
import soundfile as sf

from sonodiff.pipelines import Pipeline
from tests.pipelines.conftest import make_model_dir
from tests.serve.conftest import UvicornServer, free_port, screenshot

pytestmark = pytest.mark.slow

# every <audio> under an element, shadow roots included (gradio's player keeps its own inside one)
AUDIO_JS = """
const out = []; const walk = (root) => root.querySelectorAll('*').forEach((el) => {
  if (el.tagName === 'AUDIO') out.push([el.currentSrc || el.src, el.duration]);
  if (el.shadowRoot) walk(el.shadowRoot); });
walk(arguments[0] ? document.querySelector(arguments[0]) : document); return out;"""


def _wait(fn, timeout=90.0, every=0.25, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _playable(drv, where):
    got = drv.execute_script(AUDIO_JS, where)
    return [a for a in got if a[0] and a[1] and a[1] > 0]


@pytest.fixture()
def demo_url(tmp_path):
    from sonodiff.serve.demo import Demo, build_demo

    demo = Demo({"tiny_labels": Pipeline.from_pretrained(make_model_dir(tmp_path / "tiny_labels"))})
    page = build_demo(demo)
    page.queue(default_concurrency_limit=1)
    _, url, _ = page.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            allowed_paths=[str(demo.out_dir)], footer_links=[])
    try:
        yield url
    finally:
        page.close()
        demo.close()


def test_demo_generates_playable_audio_and_edits_an_upload(browser, demo_url, tmp_path):
    from selenium.webdriver.common.by import By

    drv = browser
    drv.get(demo_url)
    box = _wait(lambda: drv.find_elements(By.CSS_SELECTOR, "#prompt textarea"), what="the prompt box")[0]
    box.clear()
    box.send_keys("middle")  # not a label: the page says so, and keeps working
    drv.find_element(By.ID, "generate").click()
    _wait(lambda: "not a label" in drv.page_source, what="the error message")
    box.clear()
    box.send_keys("high")
    drv.find_element(By.ID, "generate").click()
    audio = _wait(lambda: _playable(drv, "#result"), what="a playable result")
    assert audio[0][1] == pytest.approx(0.5, abs=0.01)  # the model's default duration
    _wait(lambda: drv.find_elements(By.CSS_SELECTOR, "#spectrogram img"), what="the spectrogram")
    names = _wait(lambda: [e.text for e in drv.find_elements(By.CSS_SELECTOR, "#files a, #files td") if e.text],
                  what="the download list")
    assert any(n.endswith(".wav") for n in names) and any(n.endswith(".json") for n in names), names
    _wait(lambda: '"prompt": "high"' in drv.find_element(By.ID, "provenance").text.replace("'", '"')
          or "high" in drv.find_element(By.ID, "provenance").text, what="the provenance")
    screenshot(drv, tmp_path, "demo_page.png")

    # edit: upload a 1 s clip and continue it to 1.5 s
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "up.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 8000)
    drv.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Edit a clip')]").click()
    _wait(lambda: drv.find_elements(By.CSS_SELECTOR, "#clip input[type=file]"), what="the upload field")[0] \
        .send_keys(str(tmp_path / "up.wav"))
    _wait(lambda: _playable(drv, "#clip"), what="the uploaded clip")
    drv.find_element(By.XPATH, "//*[@id='mode']//label[contains(., 'continue')]").click()
    dur = drv.find_element(By.CSS_SELECTOR, "#duration input[type=number]")
    dur.clear()
    dur.send_keys("1.5")
    drv.find_element(By.ID, "edit").click()
    _wait(lambda: any(abs(a[1] - 1.5) < 0.01 for a in _playable(drv, "#result")), what="the continued clip")


def test_listening_page_answers_reach_the_report(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from sonodiff.serve.listen import Study, create_listen_app, report
    from tests.serve.test_listen import make_systems

    db = tmp_path / "ratings.sqlite"
    study = Study(make_systems(tmp_path, names=("sysA", "sysB"), items=("dog", "rain")), db)
    total = len(study.tasks("ann"))
    drv = browser

    def login(name):
        drv.get(srv.url)
        drv.find_element(By.ID, "rater").send_keys(name)
        drv.find_element(By.ID, "start").click()
        return _wait(lambda: drv.find_element(By.ID, "progress").text, what="the first task")

    def answer(k):
        _wait(lambda: len(_playable(drv, "#clips")) == len(drv.find_elements(By.CSS_SELECTOR, "#clips audio")),
              what="the clips to load")
        buttons = drv.find_elements(By.CSS_SELECTOR, "button.score, button.choice")
        assert all(not b.is_enabled() for b in buttons if b.is_displayed())  # not before listening
        drv.execute_script("document.querySelectorAll('#clips audio').forEach((a) => a.play())")
        shown = _wait(lambda: [b for b in drv.find_elements(By.CSS_SELECTOR, "button.score, button.choice")
                               if b.is_displayed() and b.is_enabled()], what="the answer buttons")
        before = drv.find_element(By.ID, "progress").text
        shown[k % len(shown)].click()
        _wait(lambda: drv.find_element(By.ID, "progress").text != before or drv.find_element(By.ID, "finished")
              .is_displayed(), what="the next task")

    with UvicornServer(create_listen_app(study)) as srv:
        assert login("ann") == f"Task 1 of {total}"
        for k in range(2):
            answer(k)
        assert login("ann") == f"Task 3 of {total}"  # a rater who comes back resumes
        _wait(lambda: len(_playable(drv, "#clips")) == len(drv.find_elements(By.CSS_SELECTOR, "#clips audio")),
              what="the clips to load")
        drv.set_window_size(1000, 560)
        screenshot(drv, tmp_path, "listen_page.png")
        for k in range(2, total):
            answer(k)
        assert drv.find_element(By.ID, "finished").is_displayed()
    rep = report(db)
    assert rep["ratings"] == total and rep["raters"] == 1
    assert sum(m["n"] for m in rep["mos"].values()) == 4 and rep["preference"][0]["a"] == "sysA"
    p = rep["preference"][0]
    assert p["prefer_a"] + p["prefer_b"] + p["no_preference"] == 2
