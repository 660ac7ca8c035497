"""The reader page end to end in headless Chromium (slow tier; needs Debian's chromium and chromium-driver,
`make browser`): open it from the file system, answer every image with the keyboard, close the browser
half-way (progress must survive), download the CSV and score it; readers who share a browser keep their own
progress, and each reader gets an order of their own, the same when they come back."""
import csv
import time
from pathlib import Path

import numpy as np
import pytest

from browser import CHROMEDRIVER, CHROMIUM, chromium
from evaluation import vtt

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="needs chromium and chromedriver: run `make browser`")


def body(d):
    from selenium.webdriver.common.by import By

    return d.find_element(By.TAG_NAME, "body")


def shown(d) -> str:
    """The id of the image on screen."""
    from selenium.webdriver.common.by import By

    return d.find_element(By.ID, "image").get_attribute("src").rsplit("/", 1)[-1][:-4]


def start(d, url: str, reader: str) -> str:
    """Open the page, type the reader's name; returns the start button's text (then clicks it)."""
    from selenium.webdriver.common.by import By

    d.get(url)
    d.find_element(By.ID, "reader-name").send_keys(reader)
    button = d.find_element(By.ID, "start")
    text = button.text
    button.click()
    return text


def answer(d, n: int, keys=("r", "3")) -> list[str]:
    """Answer the next n images; returns their ids in the order shown."""
    ids = []
    for _ in range(n):
        ids.append(shown(d))
        body(d).send_keys(*keys, "\n")
    return ids


def downloaded(downloads: Path, name: str) -> list[dict]:
    deadline = time.time() + 20
    while not (downloads / name).exists() and time.time() < deadline:
        time.sleep(0.1)
    return list(csv.DictReader(open(downloads / name, newline="")))


def export(folder: Path, n: int = 6) -> tuple[list[vtt.BlindedItem], str]:
    rng = np.random.default_rng(0)
    items, blinding = vtt.blind(rng.uniform(-1, 1, (n, 1, 16, 16)), ["a"] * n, ["r"] * n,
                                rng.uniform(-1, 1, (n, 1, 16, 16)), ["a"] * n, ["s"] * n, 64, bytes(16))
    (folder / "images").mkdir(parents=True)
    for it in items:
        (folder / "images" / f"{it.id}.png").write_bytes(it.png)
    (folder / "reader.html").write_text(vtt.reader_page([it.id for it in items], "k123"))
    return items, vtt.key_text(vtt.key_rows(items, blinding))


@needs_chromium
def test_reader_page_answer_everything_and_download(tmp_path):
    from selenium.webdriver.common.by import By

    items, key = export(tmp_path / "blinded")
    truth = {it.id: it.truth for it in items}
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    downloads.mkdir()
    url = (tmp_path / "blinded/reader.html").as_uri()

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
        assert start(d, url, "Dr Test") == f"Continue ({len(items) // 2} answered)"   # the same name goes on
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


@needs_chromium
def test_readers_who_share_a_browser_keep_their_own_progress(tmp_path):
    """A second reader on the same browser sees neither the first reader's name nor their progress or answers,
    downloads only their own answers, and the first reader goes on where they stopped."""
    from selenium.webdriver.common.by import By

    export(tmp_path / "blinded")
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    downloads.mkdir()
    url = (tmp_path / "blinded/reader.html").as_uri()
    d = chromium(profile, downloads)
    try:
        assert start(d, url, "Dr A") == "Start"
        first = answer(d, 4, ("s", "5"))
        d.get(url)                                   # the next reader, same browser
        assert d.find_element(By.ID, "reader-name").get_attribute("value") == ""
        assert d.find_element(By.ID, "start").text == "Start"
        assert start(d, url, "Dr B") == "Start"
        assert "(0 answered)" in d.find_element(By.ID, "progress").text
        second = answer(d, 2)
        d.find_element(By.ID, "download-partial").click()
        rows = downloaded(downloads, "vtt_responses_Dr_B_k123.csv")
        assert {r["reader"] for r in rows} == {"Dr B"} and [r["id"] for r in rows] == second
        assert all(r["answer"] == "real" and r["confidence"] == "3" for r in rows)
        assert start(d, url, "Dr A") == "Continue (4 answered)"
        d.find_element(By.ID, "download-partial").click()
        rows = downloaded(downloads, "vtt_responses_Dr_A_k123.csv")
        assert {r["reader"] for r in rows} == {"Dr A"} and [r["id"] for r in rows] == first
        assert all(r["answer"] == "synthetic" and r["confidence"] == "5" for r in rows)
    finally:
        d.quit()


@needs_chromium
def test_each_reader_sees_an_order_of_their_own_the_same_when_they_come_back(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    items, _ = export(tmp_path / "blinded")
    url = (tmp_path / "blinded/reader.html").as_uri()
    orders = {}
    d = chromium(tmp_path / "profile")
    try:
        for reader in ("Dr A", "Dr B"):
            start(d, url, reader)
            orders[reader] = answer(d, len(items))       # every image, in the order shown
            assert d.find_element(By.ID, "end-screen").get_attribute("class") == ""
        assert start(d, url, "Dr A") == f"Continue ({len(items)} answered)"   # back at the last image
        again = [shown(d)]
        for _ in range(len(items) - 1):                   # step back through the images: the order as before
            body(d).send_keys(Keys.ARROW_LEFT)
            again.insert(0, shown(d))
    finally:
        d.quit()
    ids = sorted(it.id for it in items)
    assert sorted(orders["Dr A"]) == ids and sorted(orders["Dr B"]) == ids
    assert orders["Dr A"] != orders["Dr B"]
    assert again == orders["Dr A"]
    d = chromium(tmp_path / "other profile")              # another browser: the order follows the name alone
    try:
        start(d, url, "Dr B")
        assert answer(d, 3) == orders["Dr B"][:3]
    finally:
        d.quit()
