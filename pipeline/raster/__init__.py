"""Reading the dates: the pair checks and the working grid, tiles, windowed reads, stretch, plan size."""
