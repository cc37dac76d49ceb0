"""The GeoPackage that `rsicrc caption` writes and `search`/`info` read, through GDAL (pyogrio).

Features go in as one Arrow batch per call, which GDAL's GeoPackage driver inserts in one
transaction: a killed run leaves whole batches, so `--resume` finds exactly the tiles that are
done. GDAL keeps the spatial index, extent and feature count. The run metadata is the layer's GDAL
metadata (the GeoPackage metadata extension; pipeline/layer/metadata.py) rather than a table of its
own, so QGIS sees one layer. What GDAL has no call for is plain SQL (pipeline/layer/sqlite_edits.py).
"""
import contextlib
import sqlite3
import warnings

import numpy as np

from .metadata import decode_metadata, encode_metadata
from .schema import GEOMETRY_COLUMN, LAYER, sql


class LayerError(Exception):
    """The file is not a readable rsicrc layer, or GDAL refused a write; the message says which."""


def layer_error_reason(exc):
    """GDAL's reason inside a LayerError ("path: doing failed (reason)"), for a message of one's own."""
    text = str(exc)
    start = text.find(" failed (")
    return text[start + len(" failed ("):-1] if start >= 0 and text.endswith(")") else text


# --- GDAL access ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _gdal(path, doing):
    """GDAL's warnings silenced (it frowns on the .partial suffix), its errors as LayerError."""
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            yield
        except (DataSourceError, DataLayerError, FieldError, GeometryError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LayerError(f"{path}: {doing} failed ({first})") from None
        except UnicodeDecodeError:  # a TEXT value GDAL hands over undecoded: a hand edit in SQL
            raise LayerError(f"{path}: {doing} failed (a text value is not valid UTF-8)") from None


def _arrow_schema(fields):
    import pyarrow as pa

    types = {"int": pa.int64(), "text": pa.string(), "real": pa.float64(), "bool": pa.bool_(),
             "blob": pa.binary()}
    return pa.schema([(name, types[kind]) for name, kind in fields] + [(GEOMETRY_COLUMN, pa.binary())])


class LayerWriter:
    """Creates the `changes` layer and appends batches of tiles to it, each batch one transaction."""

    def __init__(self, path, crs_wkt, fields):
        """fields: [(name, kind)] in layer order, CORE_FIELDS first; kind: int, text, real, bool, blob."""
        self.path = str(path)
        self.crs_wkt = crs_wkt
        self.fields = list(fields)
        self.schema = _arrow_schema(self.fields)

    def _write(self, table, doing, append, metadata=None):
        import pyogrio

        with _gdal(self.path, doing):
            pyogrio.write_arrow(table, self.path, layer=LAYER, driver="GPKG", geometry_name=GEOMETRY_COLUMN,
                                geometry_type="Polygon", crs=self.crs_wkt, append=append,
                                layer_metadata=metadata,
                                # 1.2 rather than GDAL's newest: QGIS 3.22's GDAL warns on later versions.
                                dataset_options=None if append else {"VERSION": "1.2"})

    def create(self, metadata):
        """A new file holding the empty layer and its metadata (values JSON-encoded here)."""
        self._write(self.schema.empty_table(), "creating the layer", False, encode_metadata(metadata))
        # The one thing of the schema GDAL has no call for: a tile's interval is never written twice.
        series = "interval" in {name for name, _ in self.fields}
        key = sql("{}, {}", "tile_id", "interval") if series else sql("{}", "tile_id")
        con = sqlite3.connect(self.path)
        try:
            with con:
                con.execute(sql("CREATE UNIQUE INDEX {} ON {}", f"idx_{LAYER}_tile_id", LAYER) + f"({key})")
        finally:
            con.close()

    def append(self, columns, bounds):
        """columns: {field: sequence} for every field; bounds: (N, 4) left, bottom, right, top."""
        import pyarrow as pa
        import shapely

        bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
        if len(bounds) == 0:
            return
        geoms = shapely.to_wkb(shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3]))
        arrays = [pa.array(list(columns[name]), type=self.schema.field(name).type) for name, _ in self.fields]
        arrays.append(pa.array(list(geoms), type=pa.binary()))
        self._write(pa.Table.from_arrays(arrays, schema=self.schema), "writing tiles", True)

    def set_metadata(self, values):
        """Add or replace metadata items (others are kept)."""
        write_metadata(self.path, values)


def write_metadata(path, values):
    """Add or replace metadata items of an existing layer (others are kept).

    pyogrio sets layer metadata when it opens a layer for writing; an append of no rows does just
    that. GDAL replaces the whole set, so the current items are read and merged first.
    """
    import pyarrow as pa
    import pyogrio

    items = dict(read_metadata_items(path))
    items.update(encode_metadata(values))
    with _gdal(path, "writing the run metadata"):
        pyogrio.write_arrow(pa.schema([]).empty_table(), str(path), layer=LAYER, driver="GPKG", append=True,
                            layer_metadata=items)


def read_info(path):
    import pyogrio

    with _gdal(path, "reading the layer"):
        return pyogrio.read_info(str(path), layer=LAYER)


def list_layers(path):
    import pyogrio

    with _gdal(path, "listing the layers"):
        return [str(name) for name, _ in pyogrio.list_layers(str(path))]


def read_metadata_items(path):
    return read_info(path).get("layer_metadata") or {}


def read_metadata(path):
    return decode_metadata(read_metadata_items(path))


def read_columns(path, columns, fids=None, geometry=False):
    """{column: numpy array} (plus "fid", and "geom" WKB when asked) of the features, in fid order."""
    import pyogrio.raw

    with _gdal(path, "reading features"):
        meta, fid, geom, values = pyogrio.raw.read(str(path), layer=LAYER, columns=list(columns),
                                                   read_geometry=geometry, return_fids=True,
                                                   fids=None if fids is None else np.asarray(fids, np.int64))
    out = dict(zip(meta["fields"], values))
    out["fid"] = np.asarray(fid, dtype=np.int64)
    if geometry:
        out[GEOMETRY_COLUMN] = geom
    order = np.argsort(out["fid"], kind="stable")
    return {k: np.asarray(v)[order] for k, v in out.items()}


def iter_column_batches(path, columns, batch_size=4096):
    """(fids (n,), {column: list}) chunks of the features, so memory stays flat on big layers."""
    import pyogrio.raw

    with _gdal(path, "reading features"):
        with pyogrio.raw.open_arrow(str(path), layer=LAYER, columns=list(columns), read_geometry=False,
                                    return_fids=True, batch_size=batch_size, use_pyarrow=True) as (meta, reader):
            fid_name = meta.get("fid_column") or "OGC_FID"
            for batch in reader:
                table = batch.to_pydict()
                fids = np.asarray(table.pop(fid_name, table.pop("OGC_FID", [])), dtype=np.int64)
                yield fids, table
