"""From two rasters to a captioned, searchable GeoPackage (no QGIS; torch only via rsicrc.model)."""
