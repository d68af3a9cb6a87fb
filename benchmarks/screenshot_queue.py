"""Screenshot of the Label Studio Data Manager showing the active-learning queue (headless Chromium).

Starts the demo (``detector-al demo``), logs in to its Label Studio, opens the "Active learning queue" tab
and saves a PNG (default ``docs/queue.png``); then stops the demo. Needs Debian's ``chromium`` and
``chromium-driver`` and the ``selenium`` package (``make screenshot`` installs them).

Usage: ``python benchmarks/screenshot_queue.py [--model W] [--out docs/queue.png]``
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from detector_al.label_studio.local_server import DEFAULT_PASSWORD, DEFAULT_USER, free_port

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/queue.png"))
    ap.add_argument("--data-dir", type=Path, default=Path(".cache/screenshot-demo"))
    args = ap.parse_args()

    ls_port, be_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "detector_al",
        "demo",
        "--ls-port",
        str(ls_port),
        "--backend-port",
        str(be_port),
        "--data-dir",
        str(args.data_dir),
    ] + (["--model", args.model] if args.model else [])
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = None
        while ready is None:
            line = demo.stdout.readline()
            if not line and demo.poll() is not None:
                raise SystemExit("the demo stopped before it was ready")
            print(line, end="")
            if line.startswith("  Label Studio :"):
                queue_url = line.split(":", 1)[1].strip()
            if line.startswith("READY"):
                ready = line
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1600,1000",
        ):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            base = queue_url.split("/projects/")[0]
            driver.get(f"{base}/user/login/")
            WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.NAME, "email")))
            driver.find_element(By.NAME, "email").send_keys(DEFAULT_USER)
            driver.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
            driver.find_element(By.NAME, "password").submit()
            time.sleep(3)
            driver.get(queue_url)
            WebDriverWait(driver, 90).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[class*='table']")))
            time.sleep(15)  # let the rows, scores and thumbnails render
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            print(f"screenshot: {args.out}")
        finally:
            driver.quit()
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)


if __name__ == "__main__":
    main()
