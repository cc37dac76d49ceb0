"""The "RSICRC" Processing provider and its algorithms."""
