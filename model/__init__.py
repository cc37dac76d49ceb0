"""The RSICRC change-captioning network (torch only)."""
