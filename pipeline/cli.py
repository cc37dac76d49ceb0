def main(argv=None):
    raise SystemExit("rsicrc CLI: not built yet")
