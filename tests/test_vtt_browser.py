"""The reader page end to end in headless Chromium (slow tier; needs Debian's chromium and chromium-driver,
`make browser`): open it from the file system, answer every image with the keyboard, close the browser
half-way (progress must survive), download the CSV and score it."""
import csv
import time
from pathlib import Path

import numpy as np
import pytest

from browser import CHROMEDRIVER, CHROMIUM, chromium
from evaluation import vtt

pytestmark = pytest.mark.slow

def export(folder: Path, n: int = 6) -> tuple[list[vtt.BlindedItem], str]:
    rng = np.random.default_rng(0)
    items, blinding = vtt.blind(rng.uniform(-1, 1, (n, 1, 16, 16)), ["a"] * n, ["r"] * n,
                                rng.uniform(-1, 1, (n, 1, 16, 16)), ["a"] * n, ["s"] * n, 64, bytes(16))
    (folder / "images").mkdir(parents=True)
    for it in items:
        (folder / "images" / f"{it.id}.png").write_bytes(it.png)
    (folder / "reader.html").write_text(vtt.reader_page([it.id for it in items], "k123"))
    return items, vtt.key_text(vtt.key_rows(items, blinding))


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver: run `make browser`")
def test_reader_page_answer_everything_and_download(tmp_path):
    from selenium.webdriver.common.by import By

    items, key = export(tmp_path / "blinded")
    truth = {it.id: it.truth for it in items}
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    downloads.mkdir()
    url = (tmp_path / "blinded/reader.html").as_uri()
    body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731
    shown = lambda d: d.find_element(By.ID, "image").get_attribute("src").rsplit("/", 1)[-1][:-4]  # noqa: E731

    d = chromium(profile, downloads)
    try:
        d.get(url)
        d.find_element(By.ID, "reader-name").send_keys("Dr Test")
        d.find_element(By.ID, "start").click()
        for _ in range(len(items) // 2):            # first half: the right answer, confidence 4
            i = shown(d)
            body(d).send_keys("s" if truth[i] == "synthetic" else "r", "4")
            assert d.find_element(By.ID, "next").is_enabled()
            body(d).send_keys("\n")
        assert d.execute_script("return document.getElementById('image').naturalWidth") == 64  # the PNG loads
    finally:
        d.quit()                                     # closing the browser keeps the progress

    d = chromium(profile, downloads)
    try:
        d.get(url)
        start = d.find_element(By.ID, "start")
        assert start.text == f"Continue ({len(items) // 2} answered)"
        start.click()
        while d.find_element(By.ID, "end-screen").get_attribute("class") == "hidden":
            i = shown(d)                             # second half: always "real", confidence 2
            body(d).send_keys("r", "2", "\n")
        d.find_element(By.ID, "download").click()
        deadline = time.time() + 20
        while not list(downloads.glob("*.csv")) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        d.quit()

    files = list(downloads.glob("*.csv"))
    assert [f.name for f in files] == ["vtt_responses_Dr_Test_k123.csv"]
    rows = list(csv.DictReader(open(files[0], newline="")))
    checked = vtt.check_responses(files[0].name, rows, vtt.read_key(key), "k123")
    assert len(checked) == len(items) and {r["reader"] for r in checked} == {"Dr Test"}
    first = [r for r in checked if r["confidence"] == 4]
    assert len(first) == len(items) // 2 and all(r["answer"] == r["truth"] for r in first)
    assert all(r["answer"] == "real" for r in checked if r["confidence"] == 2)
    result = vtt.score({"Dr Test": checked})["readers"]["Dr Test"]
    n_syn_second = sum(r["truth"] == "synthetic" for r in checked if r["confidence"] == 2)
    assert result["accuracy"] == pytest.approx((len(items) - n_syn_second) / len(items))
