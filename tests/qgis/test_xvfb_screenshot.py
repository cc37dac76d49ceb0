"""Desktop QGIS under Xvfb with the plugin: a caption job from the toolbar dialog, a dock
search, and a screenshot of the window (tests/artifacts/qgis_rsicrc_window.png)."""
import pytest
from desktop_qgis import ARTIFACTS, assert_window_shot, run_desktop_qgis, sample_pair

SHOT = ARTIFACTS / "qgis_rsicrc_window.png"


@pytest.mark.slow
def test_desktop_qgis_caption_and_screenshot(plugin_parent, worker_env, raster_pair, tmp_path):
    before, after = sample_pair(raster_pair)
    report = run_desktop_qgis("xvfb_qgis_script.py", tmp_path, plugin_parent, worker_env, SHOT,
                              dict(RSICRC_TEST_BEFORE=before, RSICRC_TEST_AFTER=after,
                                   RSICRC_TEST_OUTPUT=tmp_path / "changes.gpkg"),
                              watchdog_s=360, timeout_s=420, docked_table=True)
    assert report["steps"] == ["dialog", "captioned", "searched", "rendered"]
    assert report["toolbar_actions"] == ["rsicrcCaptionChanges", "rsicrcSearchDock", "rsicrcWhatChangedHere"]
    assert "Caption changes…" in report["plugin_menu"]
    assert report["renderer"] == "graduatedSymbol" and report["features"] >= 2
    assert report["search_ok"] and report["selected"] == 3 and report["selected_at_shot"] == 3
    assert_window_shot(SHOT)
