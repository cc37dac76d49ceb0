"""The demonstration model: a small RSICRC trained by `rsicrc train` on drawings of the sample's world."""
