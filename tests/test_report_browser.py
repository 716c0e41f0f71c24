"""The report's anytime curve, and its HTML page as a real browser (headless Chromium) lays it out."""

import json
import random
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
from synthetic import write_synthetic

from tune_tl.analysis.frame import load_results
from tune_tl.analysis.plots import anytime_curve
from tune_tl.analysis.report import write_report
from tune_tl.store.results import ParquetSink

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
# the leaderboard, which scrolls inside its own box (``board``: how wide it is, and how wide its box).
CHECK = """<script>addEventListener('load', () => {
  const imgs = [...document.images];
  const wide = [...document.body.children].filter(e => e.getBoundingClientRect().right > innerWidth + 1);
  const box = document.querySelector('.board'), table = box && box.querySelector('table');
  document.title = JSON.stringify({images: imgs.length, broken: imgs.filter(i => !i.complete || !i.naturalWidth).map(i => i.alt),
    shrunk: imgs.filter(i => i.width < i.naturalWidth).map(i => i.alt), wide: wide.map(e => e.tagName),
    rows: [...document.querySelectorAll('table tbody tr')].map(r => r.cells[0].textContent.trim()),
    board: box && {scroll: box.scrollWidth, client: box.clientWidth, right: table.getBoundingClientRect().right,
                   columns: table.querySelectorAll('thead th').length},
    window: innerWidth});
});</script>"""


def layout_in_chromium(search) -> dict:
    """Write the report of ``search`` and return what CHECK measured in a 1400 × 1000 headless Chromium."""
    write_report(search)
    page = search / "report" / "index.html"
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert found, dom[:500]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_in_a_browser_every_plot_shows_at_full_size_nothing_is_cut_off_and_the_leaderboard_is_ranked(search):
    layout = layout_in_chromium(search)
    assert layout["images"] == 6 and layout["broken"] == [] and layout["shrunk"] == []
    assert layout["wide"] == []
    assert layout["rows"] == [str(i) for i in range(1, 11)]


def broad_search(folder):
    """Trials over the parameters search_spaces/broad.yaml varies (14 leaderboard columns of them), with
    conditional parameters missing where they do not apply."""
    rng = random.Random(0)
    sink = ParquetSink(folder, max_epochs=2)
    for _i in range(12):
        policy, optimizer, head = (rng.choice(["prefix", "surgical", "head_only", "full"]), rng.choice(["adamw", "sgd"]),
                                   rng.choice(["linear", "mlp"]))
        config = {"freeze_policy": policy, "bn_stats": rng.choice(["update", "frozen"]), "lp_epochs": rng.choice([0, 1]),
                  "optimizer": optimizer, "lr": 10 ** rng.uniform(-4, -1.5), "weight_decay": 10 ** rng.uniform(-6, -2),
                  "head_lr_mult": 10 ** rng.uniform(0, 1), "layer_decay": rng.uniform(0.5, 1), "head": head,
                  **({"freeze_blocks": rng.randint(0, 9)} if policy == "prefix" else {}),
                  **({"train_block": rng.randint(0, 8)} if policy == "surgical" else {}),
                  **({"momentum": 0.9} if optimizer == "sgd" else {}),
                  **({"head_hidden": rng.choice([128, 256]), "head_dropout": rng.uniform(0, 0.5)} if head == "mlp" else {})}
        trial = SimpleNamespace(trial_id=f"{rng.getrandbits(32):08x}", config=config, error_file=None)
        sink.on_trial_start(0, [], trial)
        for e in (1, 2):
            sink.on_trial_result(0, [], trial, {"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_acc": rng.uniform(0.8, 0.99),
                                                "scheduled_lr": 0.01, "epoch_seconds": 1.0, "trainable_params": 1000, "diverged": False})
        sink.on_trial_complete(0, [], trial)
    sink.on_experiment_end([])
    return folder


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_in_a_browser_the_leaderboard_of_a_broad_search_fits_a_1400_px_window_without_scrolling(tmp_path):
    layout = layout_in_chromium(broad_search(tmp_path))
    board = layout["board"]
    assert board["columns"] >= 20, "rank, five result columns and 14 parameters"
    assert board["scroll"] <= board["client"], f"the leaderboard is cut off at 1400 px: {board}"
    assert board["right"] <= layout["window"] and layout["wide"] == []
