"""Desktop QGIS under Xvfb with the plugin: a caption job with a heat map from the toolbar
dialog, the heat map added styled below the result layer, and a screenshot of the window
(tests/artifacts/qgis_heatmap.png)."""
import pytest
from desktop_qgis import ARTIFACTS, assert_window_shot, run_desktop_qgis, sample_pair

SHOT = ARTIFACTS / "qgis_heatmap.png"


@pytest.mark.slow
def test_desktop_qgis_heatmap_screenshot(plugin_parent, worker_env, raster_pair, tmp_path):
    before, after = sample_pair(raster_pair)
    heat = tmp_path / "where-changed.tif"
    report = run_desktop_qgis("xvfb_heatmap_script.py", tmp_path, plugin_parent, worker_env, SHOT,
                              dict(RSICRC_TEST_BEFORE=before, RSICRC_TEST_AFTER=after,
                                   RSICRC_TEST_OUTPUT=tmp_path / "changes.gpkg", RSICRC_TEST_HEATMAP=heat),
                              watchdog_s=360, timeout_s=420, docked_table=True)
    assert report["steps"] == ["dialog", "captioned", "rendered"]
    assert report["heatmap_scale_enabled"]
    assert report["args"][report["args"].index("--heatmap") + 1] == str(heat)
    assert report["heat_below_result"], report["tree"]
    assert report["heat_renderer"] == "singlebandpseudocolor"
    assert report["heat_size"] == [128, 128]  # the 1024 px sample at the default scale 8
    from qgis.PyQt.QtGui import QColor

    image = assert_window_shot(SHOT)
    # The hot end of the ramp is on screen: some strongly red pixels in the map canvas.
    reds = sum(1 for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)
               if (lambda c: c.red() > 180 and c.green() < 90 and c.blue() < 90)(QColor(image.pixel(x, y))))
    assert reds > 50
