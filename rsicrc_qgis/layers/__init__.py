"""The result and heat-map layers QGIS shows, and their styles."""
