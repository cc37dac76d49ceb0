"""`make demo`: caption the sample pair in resources/sample and print the top captions.

The sample pair is generated (resources/sample/make_sample.py says why and how). The model is
the released hub checkpoint, downloaded once into the Hugging Face cache, or `--model DIR`.
"""
import argparse
import sys
import tempfile
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "resources" / "sample"


def main(argv=None):
    from .caption_params import default_model
    from .cli import main as cli_main
    from .info import layer_info

    ap = argparse.ArgumentParser(prog="python -m rsicrc.pipeline.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model())
    # Outside the repository, so that a demo run leaves the work tree clean.
    ap.add_argument("--output", default=str(Path(tempfile.gettempdir()) / "rsicrc-demo" / "changes.gpkg"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    before, after = SAMPLE / "before.tif", SAMPLE / "after.tif"
    if not before.exists() or not after.exists():
        print(f"rsicrc: error: {SAMPLE}: sample pair missing; run resources/sample/make_sample.py", file=sys.stderr)
        return 2
    print(f"captioning {before.name} -> {after.name} with {args.model}", file=sys.stderr)
    rc = cli_main(["caption", str(before), str(after), "-o", args.output, "--model", args.model,
                   "--device", args.device, "--query", "many buildings have been built",
                   "--query", "a road is built"])
    if rc != 0:
        return rc
    info = layer_info(args.output)
    print(f"\n{info['features']} tiles, {info['changed']} with a change caption")
    print("top captions:")
    for caption, n in info["top_captions"]:
        print(f"  {n:3d} x  {caption}")
    rc = cli_main(["search", args.output, "many buildings have been built", "--top", "5", "--device", args.device])
    print(f"\noutput: {Path(args.output).resolve()}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
