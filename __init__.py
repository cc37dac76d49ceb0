"""rsicrc: caption and search changes between two aligned rasters.

The repository root is both this Python package and the QGIS plugin folder. Importing the
package must stay cheap and free of torch and QGIS: QGIS imports it to find `classFactory`,
and the worker process imports it to run `python -m rsicrc`.
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802 - name required by QGIS
    from .rsicrc_qgis.plugin import RsicrcPlugin

    return RsicrcPlugin(iface)
