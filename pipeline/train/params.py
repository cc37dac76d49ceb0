"""The options of `rsicrc train`, once: the CLI (and any form) is built from TrainParams.

The objective's defaults are the official training script's (src/train.py); --model, --device
and --precision's checks are the caption run's (`caption_params`). Standard library only: the CLI
builds its parser before torch is imported.
"""
import argparse
from dataclasses import dataclass, field

from ..caption_params import ParamError, argparse_type, check_option, check_value, default_model, \
    option_field, options

EPOCHS = 10  # the official run trains 50 epochs from scratch; fine-tuning from the released weights needs fewer


@dataclass
class TrainParams:
    annotations: str
    images: str
    output: str
    model: str = field(default_factory=default_model)  # caption_params' --model: one definition
    device: str = "auto"
    precision: str = "fp32"  # caption_params' --precision; here the forward passes' (autocast)
    epochs: int = option_field(
        EPOCHS, flag="--epochs", kind="int", label="Epochs", minimum=1, maximum=10000,
        help=f"passes over the training captions (default {EPOCHS})")
    batch_size: int = option_field(
        4, flag="--batch-size", kind="int", label="Batch size", minimum=2, maximum=4096,
        help="captions per optimiser step (default 4, the official; at least 2: the contrastive loss compares "
             "the rows of a batch)")
    learning_rate: float = option_field(
        1e-4, flag="--learning-rate", kind="float", label="Learning rate", minimum=0.0, exclusive_minimum=True,
        maximum=1.0, help="AdamW's learning rate after the warm-up (default 1e-4, the official)")
    warmup: float = option_field(
        0.025, flag="--warmup", kind="float", label="Warm-up fraction", minimum=0.0, maximum=1.0,
        help="fraction of all steps over which the learning rate rises linearly from 0 (default 0.025, the "
             "official); constant after")
    lamb: float = option_field(
        0.5, flag="--lamb", kind="float", label="Contrastive weight", minimum=0.0, maximum=1000.0,
        help="weight of the contrastive loss beside the caption loss (default 0.5, the official)")
    temperature: float = option_field(
        0.01, flag="--temperature", kind="float", label="Contrastive temperature", minimum=0.0,
        exclusive_minimum=True, maximum=100.0, help="InfoNCE temperature (default 0.01, the official)")
    freeze_backbone: bool = option_field(
        True, flag="--freeze-backbone", kind="bool", label="Freeze the image backbone",
        help="keep the CLIP image backbone as it is (default; its features are computed once and cached); "
             "--no-freeze-backbone trains its last stages as the official RN50 run does")
    freeze_encoder: bool = option_field(
        False, flag="--freeze-encoder", kind="bool", label="Freeze the pair encoder",
        help="train the caption decoder only")
    seed: int = option_field(
        42, flag="--seed", kind="int", label="Seed", minimum=0, maximum=2 ** 31 - 1,
        help="seed of the caption order (default 42, the official): the same seed, data and settings give the "
             "same weights")
    checkpoint_every: int = option_field(
        200, flag="--checkpoint-every", kind="int", label="Save every (steps)", minimum=1, maximum=10 ** 9,
        help="save the training state every this many steps (and after every epoch): an interrupted run "
             "restarted with the same command goes on from there (default 200)")
    max_steps: int = option_field(
        None, flag="--max-steps", kind="int", label="Stop after (steps)", minimum=1, maximum=10 ** 9,
        help="stop after this many optimiser steps in all, the state saved (a later run with a larger value or "
             "without it goes on)")

    def check(self):
        """Every option checked and normalised; ParamError names the option."""
        self.device = check_value("device", self.device)
        self.precision = check_value("precision", self.precision)
        if self.precision == "fp16":
            raise ParamError("--precision fp16 is not offered for training (it needs loss scaling); use bf16 or fp32")
        for name, opt, _ in options(TrainParams):
            setattr(self, name, check_option(opt, getattr(self, name)))
        return self

    # What changes the weights (the seed, the data and the starting model are recorded beside):
    # a resumed run must have the same.
    def objective_settings(self):
        settings = {name: getattr(self, name) for name, _, _ in options(TrainParams)
                    if name not in ("checkpoint_every", "max_steps")}
        return dict(settings, precision=self.precision)


# The caption run's options that train takes too, with what they mean here (None: the same words).
SHARED_OPTION_HELP = {
    "model": "the model to start from: hub repo id or local folder (default: $RSICRC_MODEL or rogerferrod/RSICRC)",
    "device": None,
    "precision": "the number format of the forward passes: fp32 (default) or bf16 autocast (a GPU, or a CPU with "
                 "bf16 instructions); the weights and the optimiser stay fp32",
}


def add_train_arguments(parser, type_error):
    parser.add_argument("--annotations", required=True, metavar="LevirCCcaptions.json",
                        help="a LEVIR-CC-format annotation file: its 'train' split is learnt, 'val' chooses the best "
                             "epoch")
    parser.add_argument("--images", required=True, metavar="IMAGES_DIR",
                        help="the folder holding <filepath>/A/<filename> and <filepath>/B/<filename>")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                        help="the new model folder (config.json, levir_vocab.json, pytorch_model.bin, training.json); "
                             "it is built in OUT_DIR.partial and must not exist yet")
    for name, opt, default in options():
        if name in SHARED_OPTION_HELP:
            parser.add_argument(opt.flag, dest=name, type=argparse_type(opt, type_error), default=default,
                                help=SHARED_OPTION_HELP[name] or opt.help)
    for name, opt, default in options(TrainParams):
        if opt.kind == "bool":
            parser.add_argument(opt.flag, dest=name, action=argparse.BooleanOptionalAction, default=default,
                                help=opt.help)
        else:
            parser.add_argument(opt.flag, dest=name, type=argparse_type(opt, type_error), default=default,
                                help=opt.help)


def train_params_from_args(args):
    """TrainParams from a namespace of a parser with add_train_arguments, checked."""
    names = ["annotations", "images", "output", *SHARED_OPTION_HELP] + [n for n, _, _ in options(TrainParams)]
    return TrainParams(**{n: getattr(args, n) for n in names}).check()
