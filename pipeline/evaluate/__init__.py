"""`rsicrc evaluate`: LEVIR-CC reading and the official metrics."""
