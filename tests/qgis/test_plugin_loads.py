"""The plugin loads through classFactory in a real QGIS; actions, dock and provider exist."""
from qgis.core import QgsApplication


def test_classfactory_gives_plugin_with_toolbar_and_menu(qgis_iface, processing_ready, monkeypatch):
    import rsicrc

    menu_entries = []
    monkeypatch.setattr(qgis_iface, "addPluginToMenu", lambda menu, action: menu_entries.append(
        (menu, action.text())), raising=False)
    plugin = rsicrc.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert type(plugin).__name__ == "RsicrcPlugin"
        assert ("&RSICRC", "Caption changes…") in menu_entries
        assert ("&RSICRC", "Set up environment…") in menu_entries
        toolbar_names = [a.objectName() for a in plugin.toolbar.actions()]
        assert toolbar_names == ["rsicrcCaptionChanges", "rsicrcSearchDock"]
        assert not plugin.caption_action.icon().isNull()
        assert plugin.dock is not None and plugin.dock.objectName() == "RsicrcSearchDock"
        registry = QgsApplication.processingRegistry()
        assert registry.providerById("rsicrc") is not None
        assert {a.id() for a in registry.providerById("rsicrc").algorithms()} == {
            "rsicrc:captionchanges", "rsicrc:searchchanges"}
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("rsicrc") is None
