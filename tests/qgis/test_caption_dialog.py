"""The toolbar dialog: pair checks appear as soon as both layers are chosen; Run hands a
complete command to the plugin."""
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QDialogButtonBox


def test_dialog_checks_pair_and_builds_run(plugin, raster_pair, tmp_path):
    before = QgsRasterLayer(str(raster_pair[0]), "before")
    after = QgsRasterLayer(str(raster_pair[1]), "after")
    QgsProject.instance().addMapLayers([before, after])
    try:
        dialog = plugin.open_caption_dialog()
        run_button = dialog.buttons.button(QDialogButtonBox.Ok)
        dialog.before_combo.setLayer(None)
        assert not run_button.isEnabled() and "Choose the BEFORE" in dialog.checks_label.text()
        dialog.before_combo.setLayer(before)
        dialog.after_combo.setLayer(after)
        assert "2 tile(s)" in dialog.checks_label.text() and run_button.isEnabled()
        dialog.options["tile_size"].set_value(512)
        assert "smaller than one 512 px tile" in dialog.checks_label.text()
        assert not run_button.isEnabled()
        dialog.options["tile_size"].set_value(256)
        dialog.output_widget.setFilePath(str(tmp_path / "out.gpkg"))
        dialog.options["queries"].widget.setPlainText("new road\n")
        requested = []
        dialog.runRequested.disconnect()
        dialog.runRequested.connect(lambda *a: requested.append(a))
        run_button.click()
        (args, output, name, env), = requested
        assert env == {}  # no web layer, no login
        assert output == str(tmp_path / "out.gpkg")
        assert args[:3] == ["caption", str(raster_pair[0]), str(raster_pair[1])]
        assert args[args.index("--query") + 1] == "new road"
        assert "before" in name and "after" in name
        dialog.close()
    finally:
        QgsProject.instance().removeMapLayers([before.id(), after.id()])


def test_dialog_offers_the_heatmap_as_a_geotiff_to_save(plugin, raster_pair, tmp_path):
    from qgis.gui import QgsFileWidget

    before = QgsRasterLayer(str(raster_pair[0]), "before")
    after = QgsRasterLayer(str(raster_pair[1]), "after")
    QgsProject.instance().addMapLayers([before, after])
    try:
        dialog = plugin.open_caption_dialog()
        dialog.before_combo.setLayer(before)
        dialog.after_combo.setLayer(after)
        dialog.output_widget.setFilePath(str(tmp_path / "out.gpkg"))
        heat = dialog.options["heatmap"]
        assert isinstance(heat.widget, QgsFileWidget)
        assert heat.widget.storageMode() == QgsFileWidget.SaveFile and "*.tif" in heat.widget.filter()
        assert not dialog.advanced_box.isAncestorOf(heat.widget)  # offered with the everyday options
        assert not dialog.options["heatmap_scale"].widget.isEnabled()
        heat.widget.setFilePath(str(tmp_path / "where"))  # the .tif the file dialog's filter promises
        assert dialog.options["heatmap_scale"].widget.isEnabled()
        args, _ = dialog.build_args()
        assert args[args.index("--heatmap") + 1] == str(tmp_path / "where.tif")
        assert args[args.index("--heatmap-scale") + 1] == "8"
        dialog.close()
    finally:
        QgsProject.instance().removeMapLayers([before.id(), after.id()])
