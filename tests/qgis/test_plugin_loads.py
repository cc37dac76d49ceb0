"""The plugin loads through classFactory in a real QGIS; actions, dock and provider exist."""
from qgis.core import QgsApplication


def test_plugin_from_classfactory_has_toolbar_dock_and_provider(plugin):
    assert type(plugin).__name__ == "RsicrcPlugin"
    toolbar_names = [a.objectName() for a in plugin.toolbar.actions()]
    assert toolbar_names == ["rsicrcCaptionChanges", "rsicrcSearchDock", "rsicrcWhatChangedHere"]
    assert not plugin.caption_action.icon().isNull()
    assert plugin.dock is not None and plugin.dock.objectName() == "RsicrcSearchDock"
    provider = QgsApplication.processingRegistry().providerById("rsicrc")
    assert provider is not None and provider.name() == "RSICRC"
    assert {a.id() for a in provider.algorithms()} == {"rsicrc:captionchanges", "rsicrc:searchchanges",
                                                      "rsicrc:trainmodel"}
    assert QgsApplication.processingRegistry().algorithmById("rsicrc:captionchanges") \
        .displayName() == "Caption changes between two rasters"


def test_menu_entries_and_clean_unload(plugin, qgis_iface, monkeypatch):
    """A second instance (as after a plugin reload) adds its menu entries and unloads cleanly."""
    import rsicrc

    added, removed = [], []
    for where in ("", "Raster"):
        monkeypatch.setattr(qgis_iface, f"addPluginTo{where}Menu",
                            lambda menu, action, w=where: added.append((w, menu, action.text())), raising=False)
        monkeypatch.setattr(qgis_iface, f"removePlugin{where}Menu",
                            lambda menu, action, w=where: removed.append((w, menu, action.text())), raising=False)
    second = rsicrc.classFactory(qgis_iface)
    second.initGui()
    for where in ("", "Raster"):  # the Plugins menu and the Raster menu
        assert (where, "&RSICRC", "Caption changes…") in added
        assert (where, "&RSICRC", "Search changes by text") in added
        assert (where, "&RSICRC", "Set up environment…") in added
    second.unload()
    assert sorted(removed) == sorted(added)
    # The first instance's provider is untouched.
    assert QgsApplication.processingRegistry().providerById("rsicrc") is plugin.provider
