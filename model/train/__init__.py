"""Training RSICRC: the official objective and which parameters learn."""
