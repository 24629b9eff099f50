"""Take docs/mlflow-candidates.png: the MLflow UI as `optsearch ui` opens it, in headless Chromium.

    optsearch ui --no-browser --port 5123 &          # prints the URL of the candidates' view
    python docs/screenshot.py 'http://127.0.0.1:5123/#/experiments/1/runs?...' [--out docs/mlflow-candidates.png]

Chromium is driven over its DevTools protocol (aiohttp comes with MLflow) only to do what a user does
once: close MLflow's assistant panel, which opens by itself on a first visit and would cover a quarter
of the table. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# MLflow 3.17's UI keeps these in localStorage ("<key>_v<version>", JSON values).
FIRST_VISIT_DONE = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")


async def screenshot(browser: str, url: str, out: Path, width: int, height: int, wait: float) -> None:
    import aiohttp

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # Chromium may still be closing
        chromium = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                     f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                     "--remote-debugging-port=0", "about:blank"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile, "DevToolsActivePort")
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not open its DevTools port")
                await asyncio.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                    page = next(p for p in await answer.json() if p["type"] == "page")
                async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                    ids = itertools.count(1)

                    async def call(method: str, **params):
                        number = next(ids)
                        await socket.send_json({"id": number, "method": method, "params": params})
                        async for message in socket:
                            data = json.loads(message.data)
                            if data.get("id") == number:
                                return data.get("result", {})
                        raise RuntimeError(f"Chromium closed the connection during {method}")

                    await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                               deviceScaleFactor=1, mobile=False)
                    await call("Page.enable")
                    await call("Page.addScriptToEvaluateOnNewDocument", source=FIRST_VISIT_DONE)
                    await call("Page.navigate", url=url)
                    await asyncio.sleep(wait)  # the run table is filled by the page's own requests
                    shot = await call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            chromium.terminate()
            chromium.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--out", default=str(Path(__file__).parent / "mlflow-candidates.png"))
    parser.add_argument("--size", default="1400,900", help="window width,height")
    parser.add_argument("--wait", type=float, default=12.0, help="seconds for the page to render")
    args = parser.parse_args()
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        raise SystemExit("no Chromium found (apt-get install chromium)")
    width, height = (int(v) for v in args.size.split(","))
    asyncio.run(screenshot(browser, args.url, Path(args.out), width, height, args.wait))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
