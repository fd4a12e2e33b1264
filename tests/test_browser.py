"""The published report in a real browser: headless Chromium opens index.html from disk, every
image must load (complete, naturalWidth > 0) and every relative link must point at a file.

How the page is probed: tests/chromium_page.py. A screenshot of each page goes to the
`artifacts_dir` fixture's folder ($FLOWERLAB_TEST_ARTIFACTS) for a person to look at.

Needs /usr/bin/chromium (Debian: apt-get install -y chromium). Skipped when it is absent,
except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from chromium_page import assert_nothing_hidden_at_laptop_width, assert_page_loads_in_the_browser, screenshot

from flowerlab.reporting import captions

pytestmark = pytest.mark.browser

# With three seeds and a training benchmark (results/bench/training.csv): every figure. With one
# seed and no benchmark: all but the optional ones (the probability of improvement, the benchmark).
STUDIES = {"three seeds": ("two_architecture_report", len(captions.FIGURES)),
           "one seed": ("one_seed_report", len(captions.FIGURES) - len(captions.OPTIONAL_FIGURES))}


@pytest.fixture(scope="module", params=list(STUDIES))
def fake_report(request: pytest.FixtureRequest) -> tuple[Path, int]:
    """(the published index.html, the figures it must show) of a fake study with 3 seeds, and with 1."""
    fixture, figures = STUDIES[request.param]
    return request.getfixturevalue(fixture), figures


@pytest.mark.slow
def test_landing_page_images_and_links_work_in_chromium(
    chromium: Path, fake_report: tuple[Path, int], tmp_path: Path, artifacts_dir: Path
) -> None:
    page, figures = fake_report
    seen = assert_page_loads_in_the_browser(chromium, page, tmp_path)
    assert len(seen["images"]) == figures
    assert_nothing_hidden_at_laptop_width(seen)
    assert {"report.html", "../metrics.csv", "../architectures.csv"} <= set(seen["links"])
    screenshot(chromium, page, artifacts_dir / f"report-{figures}-figures.png", tmp_path / "profile-shot")


@pytest.mark.slow
def test_notebook_html_images_load_in_chromium(chromium: Path, fake_report: tuple[Path, int], tmp_path: Path) -> None:
    page, figures = fake_report
    seen = assert_page_loads_in_the_browser(chromium, page.parent / "report.html", tmp_path)
    assert len(seen["images"]) == figures


def test_the_workflow_report_in_this_checkout(
    chromium: Path, repo_root: Path, tmp_path: Path, artifacts_dir: Path
) -> None:
    """The report a real or smoke run of the workflow published here, when there is one."""
    page = repo_root / "results" / "report" / "index.html"
    if not page.is_file():
        pytest.skip(f"{page} not found: run the workflow (e.g. the smoke study) first")
    # Probe a copy beside the original, so that the run's own results folder is not touched.
    copy = tmp_path / "results" / "report"
    shutil.copytree(
        page.parent.parent, tmp_path / "results", ignore=shutil.ignore_patterns("*.tfrec", "*.keras")
    )
    assert_nothing_hidden_at_laptop_width(assert_page_loads_in_the_browser(chromium, copy / "index.html", tmp_path))
    screenshot(
        chromium,
        copy / "index.html",
        artifacts_dir / "workflow-report.png",
        tmp_path / "profile-shot",
    )
