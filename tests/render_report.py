#!/usr/bin/env python
"""Render an HTML report in headless Chromium: screenshot, every <img> loaded, no console error.

How (offline, no driver needed):

1. A copy of the report gets a small script injected first in ``<head>``: it
   records ``window.onerror``, unhandled promise rejections, ``console.error``
   calls and, once the page has loaded, each image's ``naturalWidth`` and the
   page height, into a ``<pre id="render-check">`` JSON element.
2. ``chromium --headless --dump-dom`` prints the DOM after the load, from
   which the JSON is read; Chromium's own log (``--enable-logging=stderr
   --v=0``) is scanned for console messages at error level and for uncaught
   exceptions, which catches errors the injected script could not (a syntax
   error in a script of the page).
3. ``chromium --headless --screenshot`` of the original report, the window as
   tall as the page (up to :data:`MAX_HEIGHT` pixels).

Usage::

    python tests/render_report.py REPORT.html [--screenshot OUT.png]

exits 0 when every image loaded and no error occurred, 1 otherwise, 2 without
Chromium. The tests call :func:`render`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: flags headless Chromium needs on a closed network (no sandbox as root, no background connections)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
WIDTH = 1280
MAX_HEIGHT = 16000
TIMEOUT_S = 120

PROBE = """<script>
(function () {
  var record = {errors: [], images: [], height: 0, loaded: false};
  function note(message) { record.errors.push(String(message)); }
  window.addEventListener('error', function (event) {
    if (event.target && event.target.tagName === 'IMG') { return; }  // image failures are counted below
    note('error: ' + event.message + ' at ' + event.filename + ':' + event.lineno);
  }, true);
  window.addEventListener('unhandledrejection', function (event) { note('unhandled rejection: ' + event.reason); });
  var consoleError = console.error;
  console.error = function () { note('console.error: ' + Array.prototype.join.call(arguments, ' ')); consoleError.apply(console, arguments); };
  window.addEventListener('load', function () {
    var images = document.getElementsByTagName('img');
    for (var i = 0; i < images.length; i++) {
      record.images.push({alt: images[i].alt, complete: images[i].complete, naturalWidth: images[i].naturalWidth});
    }
    record.height = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);
    record.loaded = true;
    var out = document.createElement('pre');
    out.id = 'render-check';
    out.textContent = JSON.stringify(record);
    document.body.appendChild(out);
  });
})();
</script>"""

_CHECK = re.compile(r'<pre id="render-check">(.*?)</pre>', re.S)
#: Chromium log lines of page console messages at error level, and uncaught exceptions
_CONSOLE_ERROR = re.compile(r"(:ERROR:CONSOLE|CONSOLE\(\d+\)\] \"Uncaught|Uncaught \w*Error)")


def find_chromium():
    """Path of a Chromium binary (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(chromium, args, profile):
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)


def render(report, screenshot, chromium=None):
    """Load ``report`` in headless Chromium, check it and take a screenshot.

    Returns
    -------
    dict
        ``images`` (count), ``broken`` (alt texts of images with no natural
        width), ``errors`` (page and console errors), ``height`` (px),
        ``screenshot`` (path).
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("No Chromium found; install Debian's 'chromium' package (apt-get install chromium).")
    report = Path(report).resolve()
    screenshot = Path(screenshot).resolve()
    html = report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="render-report-") as folder:
        folder = Path(folder)
        probed = folder / report.name
        head = re.search(r"<head[^>]*>", html, re.I)
        probed.write_text(html[: head.end()] + PROBE + html[head.end():] if head else PROBE + html, encoding="utf-8")
        dumped = _run(chromium, ["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], folder / "profile1")
        match = _CHECK.search(dumped.stdout)
        if match is None:
            raise RuntimeError(
                f"Chromium did not load {report} (exit {dumped.returncode}); its log ends with:\n"
                + "\n".join(dumped.stderr.splitlines()[-15:])
            )
        record = json.loads(match.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        errors = list(record["errors"])
        errors += [line.strip() for line in dumped.stderr.splitlines() if _CONSOLE_ERROR.search(line)]
        height = int(min(max(record["height"], 600), MAX_HEIGHT))
        shot = _run(
            chromium, [f"--window-size={WIDTH},{height}", f"--screenshot={screenshot}", report.as_uri()],
            folder / "profile2",
        )
        errors += [line.strip() for line in shot.stderr.splitlines() if _CONSOLE_ERROR.search(line)]
    if not screenshot.exists():
        raise RuntimeError(f"Chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}")
    broken = [image["alt"] for image in record["images"] if not image["complete"] or image["naturalWidth"] <= 0]
    return {"images": len(record["images"]), "broken": broken, "errors": errors, "height": record["height"],
            "screenshot": str(screenshot)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="the HTML report")
    parser.add_argument("--screenshot", default=None, help="output PNG (default: next to the report)")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("headless Chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    screenshot = args.screenshot or str(Path(args.report).with_suffix(".png"))
    result = render(args.report, screenshot, chromium)
    print(json.dumps(result, indent=2))
    return 0 if result["images"] and not result["broken"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
