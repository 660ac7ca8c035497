"""Headless Chromium for the browser tests and bench/screenshots.py (Debian's chromium and chromium-driver:
`make browser`)."""
from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def chromium(profile: Path, downloads: Path | None = None, offline: bool = False, size=(1280, 900)):
    """A headless Chromium WebDriver; ``offline``: every network request fails (file:// still loads)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    if offline:  # no proxy answers and no name resolves: any http(s) fetch fails
        opts.add_argument("--proxy-server=http://127.0.0.1:9")
        opts.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")
    if downloads is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if offline:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                    "downloadThroughput": -1, "uploadThroughput": -1})
    return driver


def full_page_png(driver, path: Path, width: int = 1280) -> None:
    """Screenshot of the whole page, not just the window."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 40, 16000))
    driver.save_screenshot(str(path))
