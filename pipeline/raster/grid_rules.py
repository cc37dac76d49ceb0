"""The rules by which two rasters share a grid, and the pixel size the model was trained on.

Standard library only: the pipeline's pair checks and the QGIS dialog's quick checks both use them.
"""

# Origins may differ by this fraction of a pixel and still count as the same grid.
ALIGN_TOLERANCE_PX = 0.05
PIXEL_SIZE_RTOL = 1e-4
LEVIR_PIXEL_M = 0.5
# Pixel sizes outside [LEVIR/FAR, LEVIR*FAR] get a warning.
FAR_FACTOR = 2.0
METERS_PER_DEGREE = 111_320.0
