"""Result layers in folders whose names hold characters that URIs treat specially (#, ?, %, &,
spaces) or non-ASCII letters: the plugin opens, recognises and searches them all; an output
that QGIS itself could not open afterwards is refused before the run, saying why."""
import shutil

import pytest
from qgis.core import QgsProject, QgsVectorLayer

OPENABLE = ["with space", "hash#tag", "what?query=1", "50% done", "a&b;c=d", "résumé ünïcødé", "北京 변화"]
FILE_NAME = "changes #1 ?.gpkg"


@pytest.mark.parametrize("name", OPENABLE)
def test_result_layer_in_an_odd_folder_is_opened_and_searched(plugin, worker_env, captioned, tmp_path, name,
                                                              wait_signal):
    from rsicrc.rsicrc_qgis.caption import job as caption_job
    from rsicrc.rsicrc_qgis.layers import result_layer

    out, _ = captioned
    folder = tmp_path / name
    folder.mkdir()
    path = folder / FILE_NAME
    assert caption_job.output_path(str(path)) == str(path)  # the dialog and the algorithm accept it
    shutil.copy(out, path)
    layer = QgsVectorLayer(caption_job.layer_uri(str(path)), "odd", "ogr")
    assert layer.isValid() and layer.featureCount() == 2
    assert result_layer.gpkg_path(layer) == str(path)
    assert result_layer.layer_metadata(layer)["complete"] is True
    QgsProject.instance().addMapLayer(layer)
    try:
        dock = plugin.dock
        dock.set_layer(layer)
        assert dock.query_edit.isEnabled(), dock.status_label.text()
        dock.top_spin.setValue(1)
        dock.query_edit.setText("road")
        ok, message = wait_signal(dock.searchFinished, 300, trigger=dock.query_edit.returnPressed.emit)
        assert ok, message
        reopened = QgsVectorLayer(caption_job.layer_uri(str(path)), "again", "ogr")
        assert all(isinstance(f["search_score"], float) for f in reopened.getFeatures())
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_percent_escapes_are_opened_or_refused_up_front(captioned, tmp_path):
    """"%20" in a folder name: opened where QGIS's GDAL can, else refused as an output at once."""
    from rsicrc.rsicrc_qgis.caption import job as caption_job
    from rsicrc.rsicrc_qgis.layers import result_layer

    folder = tmp_path / "fifty%20percent"
    folder.mkdir()
    path = folder / "changes.gpkg"
    shutil.copy(captioned[0], path)
    opens = QgsVectorLayer(caption_job.layer_uri(str(path)), "pct", "ogr").isValid()
    assert opens == (not result_layer.gdal_decodes_percent_escapes())
    if opens:
        assert caption_job.output_path(str(path)) == str(path)
    else:
        with pytest.raises(caption_job.BadParameter, match=r'QGIS could not show .*"%20".*Choose another folder'):
            caption_job.output_path(str(path))


def test_a_pipe_in_the_output_path_is_refused(tmp_path):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    folder = tmp_path / "dots.gpkg|layername=x"
    folder.mkdir()
    with pytest.raises(caption_job.BadParameter, match=r'holds "\|"'):
        caption_job.output_path(str(folder / "changes.gpkg"))
    # What Processing hands over for a GeoPackage destination is still understood.
    assert caption_job.output_path(f"{tmp_path / 'o.gpkg'}|layername=changes") == str(tmp_path / "o.gpkg")
