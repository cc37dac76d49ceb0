"""Desktop QGIS under Xvfb with the plugin: the "What changed here?" tool switched on from the
toolbar, a mouse click on the map, the answer in the panel and the where-changed map on the
canvas, and a screenshot of it (tests/artifacts/qgis_click.png)."""
import pytest
from desktop_qgis import ARTIFACTS, assert_window_shot, run_desktop_qgis, sample_pair

SHOT = ARTIFACTS / "qgis_click.png"


@pytest.mark.slow
def test_desktop_qgis_click_answer_and_screenshot(plugin_parent, worker_env, raster_pair, tmp_path):
    before, after = sample_pair(raster_pair)
    report = run_desktop_qgis("xvfb_map_tool_script.py", tmp_path, plugin_parent, worker_env, SHOT,
                              dict(RSICRC_TEST_BEFORE=before, RSICRC_TEST_AFTER=after),
                              watchdog_s=300, timeout_s=360)
    assert report["steps"] == ["tool", "clicked", "answered", "rendered"]
    assert report["tool_active"]
    assert "rsicrcWhatChangedHere" in report["toolbar_actions"]
    # The mouse click came back before the answer: QGIS was waiting, not frozen.
    assert "Starting the model" in report["status_while_waiting"]
    assert report["ok"] and report["caption"] and report["panel_caption"] == report["caption"]
    # The window centred on the click: the clicked tile's, give or take the screen pixel the mouse hit.
    window, expected = report["window"], report["expected_window"]
    assert window["size"] == expected["size"]
    assert abs(window["col"] - expected["col"]) <= 2 and abs(window["row"] - expected["row"]) <= 2
    assert "Change score" in report["panel_details"]
    assert report["has_attention"]
    assert report["heat_cells"] >= 4 and report["heat_bands"] >= 2
    assert_window_shot(SHOT)
