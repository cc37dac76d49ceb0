"""One definition of the run options (pipeline/caption_params.py): the CLI, the Processing
algorithm (and so qgis_process) and the dialog are built from it, and every option travels from
each of them to the command line the worker runs."""
import argparse
from pathlib import Path

import pytest
from qgis.core import QgsProcessingContext, QgsProcessingParameterDefinition, QgsSettings

from rsicrc.pipeline import caption_params as cp
from rsicrc.pipeline.cli import build_parser

# A value different from the default for every form option: what a user could type.
CHANGED = {"model": "/models/RSICRC", "bands": "4,3,2", "tile_size": 224, "queries": ["new road", "trees"],
           "device": "cpu", "reproject": True, "clip": True, "overlap": 32, "batch_size": 8, "max_nodata": 0.25,
           "target_resolution": 0.75, "clip_model": "/models/RS-M-CLIP", "classes": "forest,water",
           "yes_large": True, "overwrite": True, "heatmap": "/maps/where-changed.tif", "heatmap_scale": 4,
           "precision": "bf16", "extent": "600000.0,5099900.0,600050.0,5099950.0,EPSG:32632"}
# The other area option: a run takes an extent or an area, so it travels on its own (test_area_*).
AREA_ALONE = {"area"}
# The dialog's one "Area" chooser stands for these two options.
AREA_OPTIONS = {"extent", "area"}


def _processing_value(name, value, opt):
    """What a Processing caller passes for an option's value."""
    if isinstance(value, list):
        return "\n".join(value)
    if opt.kind in ("device", "choice"):
        from rsicrc.rsicrc_qgis.processing.caption_algorithm import option_choices

        return option_choices(opt).index(value)
    if opt.kind == "extent":  # Processing's own text: xmin,xmax,ymin,ymax [crs]
        x0, y0, x1, y1, crs = value.split(",")
        return f"{x0},{x1},{y0},{y1} [{crs}]"
    return value


def _caption_parser():
    return build_parser()._subparsers._group_actions[0].choices["caption"]


def _parsed(argv):
    """CaptionParams as the CLI makes them from argv (argv[0] == "caption", "--progress" allowed)."""
    args = build_parser().parse_args(argv)
    return cp.from_args(args).check()


def test_every_form_option_is_listed_in_changed():
    assert {n for n, _, _ in cp.form_options()} == set(CHANGED) | AREA_ALONE
    for name, opt, default in cp.form_options():
        if name not in AREA_ALONE:
            assert CHANGED[name] != default, name


def test_the_cli_is_built_from_the_options():
    parser = _caption_parser()
    for name, opt, default in cp.options():
        action = parser._option_string_actions[opt.flag]
        assert action.dest == name and action.help == opt.help, name
        assert action.default == (False if opt.kind == "resume" else default), name
    assert parser._option_string_actions["--resume-if-possible"].const == "auto"
    with pytest.raises(Exception, match="not allowed with"):
        parser.parse_args(["b", "a", "-o", "o.gpkg", "--resume", "--resume-if-possible"])


@pytest.mark.parametrize("name,bad", [("tile_size", "16"), ("tile_size", "5000"), ("overlap", "-1"),
                                      ("batch_size", "0"), ("max_nodata", "1.5"), ("max_nodata", "nan"),
                                      ("target_resolution", "0"), ("target_resolution", "inf"),
                                      ("bands", "1,2"), ("device", "gpu"), ("precision", "fp64")])
def test_the_cli_refuses_what_the_option_refuses(name, bad):
    opt = next(o for n, o, _ in cp.options() if n == name)
    with pytest.raises(cp.ParamError):
        cp.check_value(name, bad)
    with pytest.raises(argparse.ArgumentTypeError):
        _caption_parser()._option_string_actions[opt.flag].type(bad)


def test_to_argv_round_trips_through_the_cli():
    values = {"before": "b.tif", "after": "a.tif", "later": ["c.tif", "d.tif"], "output": "o.gpkg", **CHANGED,
              "resume": "auto"}
    params = _parsed(cp.to_argv(values))
    for name, value in values.items():
        assert getattr(params, name) == value, name


def test_processing_parameters_are_built_from_the_options(plugin):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("rsicrc:captionchanges")
    for name, opt, default in cp.form_options():
        param = alg.parameterDefinition(name.upper())
        assert param is not None, name
        assert param.help() == opt.help
        advanced = bool(param.flags() & QgsProcessingParameterDefinition.FlagAdvanced)
        assert advanced == opt.advanced, name
        if opt.kind in ("int", "float"):
            assert (param.minimum(), param.maximum()) == (opt.minimum, opt.maximum), name
            assert param.defaultValue() == default, name
        elif opt.kind == "bool":
            assert param.defaultValue() == default, name
        elif opt.kind == "choice":  # an enum of the option's values, its default the option's
            assert param.options() == list(opt.choices) and param.defaultValue() == opt.choices.index(default), name
        elif opt.kind == "raster_output":  # an optional output of the algorithm, not created unless asked
            assert param.type() == "rasterDestination" and not param.createByDefault(), name
            assert param.flags() & QgsProcessingParameterDefinition.FlagOptional, name
            assert alg.outputDefinition(name.upper()) is not None, name


def test_every_option_travels_from_processing_to_the_command(plugin, raster_pair, tmp_path):
    from qgis.core import QgsApplication

    from rsicrc.rsicrc_qgis.caption import job as caption_job
    from rsicrc.rsicrc_qgis.processing.caption_algorithm import option_value

    alg = QgsApplication.processingRegistry().algorithmById("rsicrc:captionchanges")
    kinds = {name: opt for name, opt, _ in cp.form_options()}
    parameters = {name.upper(): _processing_value(name, v, kinds[name]) for name, v in CHANGED.items()}
    context = QgsProcessingContext()
    values = {name: option_value(alg, name, opt, parameters, context) for name, opt, _ in cp.form_options()}
    out = str(tmp_path / "o.gpkg")
    later = alg.later_layers({"LATER": [str(raster_pair[0]), str(raster_pair[1])]}, context)
    argv = caption_job.caption_args({**values, "before": str(raster_pair[0]), "after": str(raster_pair[1]),
                                     "later": caption_job.later_paths(later), "output": out})
    params = _parsed(argv)
    for name, value in CHANGED.items():
        assert getattr(params, name) == value, name
    assert params.later == [str(raster_pair[0]), str(raster_pair[1])]
    assert params.resume is False and argv[-2:] == ["--progress", "json"]


def test_every_option_travels_from_the_dialog_to_the_command(plugin, raster_pair, tmp_path):
    from qgis.core import QgsProject, QgsRasterLayer

    before = QgsRasterLayer(str(raster_pair[0]), "before")
    after = QgsRasterLayer(str(raster_pair[1]), "after")
    QgsProject.instance().addMapLayers([before, after])
    try:
        dialog = plugin.open_caption_dialog()
        dialog.before_combo.setLayer(before)
        dialog.after_combo.setLayer(after)
        assert set(dialog.options) == set(CHANGED) - AREA_OPTIONS
        advanced = {n for n, o in dialog.options.items() if dialog.advanced_box.isAncestorOf(o.widget)}
        assert advanced == {n for n, opt, _ in cp.form_options() if opt.advanced}
        for name, widget in dialog.options.items():
            widget.set_value(CHANGED[name])
        dialog.output_widget.setFilePath(str(tmp_path / "o.gpkg"))
        dialog.add_later(before)  # a series that comes back: BEFORE, AFTER, BEFORE
        args, output = dialog.build_args()
        params = _parsed(args)
        for name, value in CHANGED.items():
            if name not in AREA_OPTIONS:
                assert getattr(params, name) == value, name
        assert params.extent is None and params.area is None  # the whole overlap unless chosen
        assert params.later == [str(raster_pair[0])]
        dialog.options["clip"].set_value(False)  # its dependants are then off, and not passed
        assert not dialog.options["classes"].widget.isEnabled()
        assert "--classes" not in dialog.build_args()[0]
        dialog.options["heatmap"].set_value(None)
        assert not dialog.options["heatmap_scale"].widget.isEnabled()
        assert not {"--heatmap", "--heatmap-scale"} & set(dialog.build_args()[0])
        dialog.close()
    finally:
        QgsProject.instance().removeMapLayers([before.id(), after.id()])


def test_dialog_defaults_are_the_options_defaults(plugin, monkeypatch):
    for var in ("RSICRC_MODEL", "RSICRC_CLIP_MODEL"):
        monkeypatch.delenv(var, raising=False)
    for key in ("rsicrc/model", "rsicrc/clip_model", "rsicrc/device"):
        QgsSettings().remove(key)
    dialog = plugin.open_caption_dialog()
    try:
        assert dialog.area_chooser.is_whole() and dialog.area_chooser.values() == {}
        for name, opt, default in cp.form_options():
            if name in AREA_OPTIONS:
                continue
            got = dialog.options[name].value()
            # An empty model field means "the plugin settings, else the CLI's default".
            assert got == (None if name in ("model", "clip_model") else default), name
    finally:
        dialog.close()


def test_plugin_settings_fill_what_the_form_leaves_empty(monkeypatch, tmp_path):
    from rsicrc.rsicrc_qgis.caption import job as caption_job
    from rsicrc.rsicrc_qgis import settings

    out = str(tmp_path / "o.gpkg")
    base = {"before": "b.tif", "after": "a.tif", "output": out}
    for var in ("RSICRC_MODEL", "RSICRC_CLIP_MODEL"):
        monkeypatch.delenv(var, raising=False)
    QgsSettings().remove("rsicrc/clip_model")
    assert "--clip-model" not in caption_job.caption_args({**base, "clip": True})
    settings.save(clip_model=" /stored/clip ", model="/stored/model", device_name="cpu")
    try:
        args = caption_job.caption_args({**base, "clip": True})
        assert args[args.index("--clip-model") + 1] == "/stored/clip"
        assert args[args.index("--model") + 1] == "/stored/model"
        assert args[args.index("--device") + 1] == "cpu"
        assert "--clip-model" not in caption_job.caption_args({**base, "clip": False})
        monkeypatch.setenv("RSICRC_CLIP_MODEL", "/env/clip")
        args = caption_job.caption_args({**base, "clip": True})
        assert args[args.index("--clip-model") + 1] == "/env/clip"
    finally:
        for key in ("rsicrc/clip_model", "rsicrc/model", "rsicrc/device"):
            QgsSettings().remove(key)


def test_form_values_are_checked_before_a_run(tmp_path):
    from rsicrc.rsicrc_qgis.caption import job as caption_job

    base = {"before": "b.tif", "after": "a.tif", "output": str(tmp_path / "o.gpkg")}
    with pytest.raises(caption_job.BadParameter, match="Tile overlap"):
        caption_job.caption_args({**base, "tile_size": 64, "overlap": 64})
    with pytest.raises(caption_job.BadParameter, match="Bands"):
        caption_job.caption_args({**base, "bands": "1,2"})
    Path(caption_job.partial_path(base["output"])).write_bytes(b"")
    assert "--resume-if-possible" in caption_job.caption_args(base)
    with pytest.raises(caption_job.BadParameter, match="GeoPackage"):
        caption_job.output_path(str(tmp_path / "x.shp"))
    assert caption_job.parse_queries("a\n\n  b  \n") == ["a", "b"]
