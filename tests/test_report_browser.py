"""The report's anytime curve, and its HTML page as a real browser (headless Chromium) lays it out."""

import json
import re
import shutil
import subprocess

import pytest

from tune_tl.analysis.frame import load_results
from tune_tl.analysis.report import anytime_curve, write_report
from tune_tl.store.results import ParquetSink
from synthetic import write_synthetic

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)


@pytest.fixture
def search(tmp_path):
    sink = ParquetSink(tmp_path, max_epochs=4)
    write_synthetic(sink, 12, 4)
    return tmp_path


def test_the_anytime_curve_is_the_running_best_in_time_order(search):
    res = load_results(search)
    curve = anytime_curve(res)
    assert len(curve) == len(res.epochs)
    assert curve["minutes"].is_monotonic_increasing and (curve["minutes"] >= 0).all()
    assert curve["best_val_acc"].is_monotonic_increasing
    assert curve["best_val_acc"].iloc[-1] == pytest.approx(res.epochs["val_acc"].max())
    assert curve["improved"].iloc[0] and curve["improved"].sum() <= len(curve)


def test_the_report_includes_the_anytime_plot(search):
    _, files = write_report(search)
    assert "anytime.png" in {f.name for f in files}


# Run in the page once it has loaded: every plot decoded, and nothing wider than the window except
# the leaderboard, which scrolls inside its own box.
CHECK = """<script>addEventListener('load', () => {
  const imgs = [...document.images];
  const wide = [...document.body.children].filter(e => e.getBoundingClientRect().right > innerWidth + 1);
  document.title = JSON.stringify({images: imgs.length, broken: imgs.filter(i => !i.complete || !i.naturalWidth).map(i => i.alt),
    shrunk: imgs.filter(i => i.width < i.naturalWidth).map(i => i.alt), wide: wide.map(e => e.tagName),
    rows: [...document.querySelectorAll('table tbody tr')].map(r => r.cells[0].textContent.trim())});
});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_in_a_browser_every_plot_shows_at_full_size_nothing_is_cut_off_and_the_leaderboard_is_ranked(search):
    write_report(search)
    page = search / "report" / "index.html"
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert found, dom[:500]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["images"] == 6 and layout["broken"] == [] and layout["shrunk"] == []
    assert layout["wide"] == []
    assert layout["rows"] == [str(i) for i in range(1, 11)]
