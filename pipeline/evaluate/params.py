"""The options of `rsicrc evaluate`. --model, --device, --batch-size and --precision are the caption run's own
(`caption_params`: one definition, one check, for every command that has them).

Standard library only: the CLI builds its parser before torch is imported.
"""
from ..caption_params import argparse_type, options

SHARED = ("model", "device", "batch_size", "precision")


def add_evaluate_arguments(parser, type_error):
    """Add the evaluate options to an argparse parser (type_error: argparse.ArgumentTypeError)."""
    parser.add_argument("--annotations", required=True, metavar="LevirCCcaptions.json",
                        help="the LEVIR-CC annotation file ({\"images\": [records]})")
    parser.add_argument("--images", required=True, metavar="IMAGES_DIR",
                        help="the folder holding <filepath>/A/<filename> and <filepath>/B/<filename>")
    parser.add_argument("--split", default="test", help="the split to evaluate (default test)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="folder for metrics.json, captions.json and report.md (made when missing)")
    for name, opt, default in options():
        if name in SHARED:
            parser.add_argument(opt.flag, dest=name, type=argparse_type(opt, type_error), default=default,
                                help=opt.help)

