"""`rsicrc train`: fine-tuning RSICRC on a LEVIR-CC-format dataset with the official objective."""
