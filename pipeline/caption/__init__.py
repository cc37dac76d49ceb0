"""A caption run: its steps, the local and Ray engines, time series, caption-batch, the heat map and the point caption."""
