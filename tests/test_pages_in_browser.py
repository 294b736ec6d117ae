"""The HTML report and the documentation site, opened in a real browser (Debian's Chromium, headless, driven by
Playwright) over HTTP on loopback: no console error, no request that fails, every image drawn, every link within
the site answered. A screenshot of each page is kept under build/screenshots/ for a person to look at."""

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest
from test_docs_site import build_site

from metaedge.sdk.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("METAEDGE_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "build" / "screenshots"
# flags for a machine without a display or outside network (Chromium otherwise dials Google's hosts at start)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS_PAGES = ("", "concepts/", "tutorials/onnx/", "tutorials/qiskit/", "api-reference/", "cli-reference/", "results/demo/", "bundle-format/")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: 'make env' installs Debian's package (or set METAEDGE_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def served():
    """``served(directory)``: the directory's URL on a loopback HTTP server, stopped after the test."""
    servers = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def visit(browser, url: str, shot: str) -> list[str]:
    """Open ``url``: what went wrong on the page (console errors, failed requests, undrawn images), and the links
    within the site it holds (without their fragments)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    undrawn = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    problems += [f"image not drawn: {src}" for src in undrawn]
    links = page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=False)
    page.close()
    return problems, [urldefrag(link)[0] for link in links if link.startswith(urljoin(url, "/"))]


def test_the_html_report_shows_every_figure_without_an_error(browser, served, tmp_path):
    assert main(["report", "--out", str(tmp_path / "report"), "--quick", "--quiet"]) == 0
    problems, links = visit(browser, served(tmp_path / "report") + "index.html", "report")
    assert problems == []
    assert len(list((tmp_path / "report").glob("*.png"))) >= 6


def test_the_docs_site_loads_every_page_image_and_link(browser, served, tmp_path):
    base = served(build_site(tmp_path / "site"))
    problems, linked = [], set()
    for page in DOCS_PAGES:
        found, links = visit(browser, base + page, "docs-" + (page.strip("/").replace("/", "-") or "index"))
        problems += [f"{page or 'index'}: {p}" for p in found]
        linked.update(links)
    request = browser.new_context().request
    broken = [link for link in sorted(linked) if request.get(link).status >= 400]
    assert problems == [] and broken == []
    assert len(linked) > 20
