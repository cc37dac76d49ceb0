"""The GeoPackage a run writes: its schema, BLOBs, metadata, writing and reading, resume and shards."""
