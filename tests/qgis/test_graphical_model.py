"""A graphical model built in code: rsicrc:captionchanges feeding rsicrc:searchchanges, run
through processing.run like a model saved from the Model Designer."""

import pytest
from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingModelAlgorithm,
                       QgsProcessingModelChildAlgorithm, QgsProcessingModelChildParameterSource,
                       QgsProcessingModelOutput, QgsProcessingModelParameter, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsVectorLayer)


def _child(alg_id, child_id, sources):
    child = QgsProcessingModelChildAlgorithm(alg_id)
    child.setChildId(child_id)
    for name, source in sources.items():
        child.addParameterSources(name, [source])
    return child


def caption_then_search_model():
    """Inputs before, after, query; caption (256 px tiles, the query as a q_ field, a temporary
    GeoPackage) -> search of its OUTPUT for the query; the model's one output is the scored layer."""
    model = QgsProcessingModelAlgorithm("caption then search", "rsicrc tests")
    for param in (QgsProcessingParameterRasterLayer("before", "BEFORE"),
                  QgsProcessingParameterRasterLayer("after", "AFTER"),
                  QgsProcessingParameterString("query", "Query")):
        model.addModelParameter(param, QgsProcessingModelParameter(param.name()))
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    from_input = QgsProcessingModelChildParameterSource.fromModelParameter
    model.addChildAlgorithm(_child("rsicrc:captionchanges", "caption", {
        "BEFORE": from_input("before"), "AFTER": from_input("after"), "TILE_SIZE": static(256),
        "QUERIES": from_input("query"), "DEVICE": static(0), "CLIP": static(False),
        "REPROJECT": static(False)}))
    search = _child("rsicrc:searchchanges", "search", {
        "INPUT": QgsProcessingModelChildParameterSource.fromChildOutput("caption", "OUTPUT"),
        "QUERY": from_input("query"), "FIELD": static("model_score"), "TOP": static(1),
        "METHOD": static(0), "WHEN": static(0), "APPEARED": static(False)})
    output = QgsProcessingModelOutput("scored", "Scored changes")
    output.setChildId("search")
    output.setChildOutputName("OUTPUT")
    search.setModelOutputs({"scored": output})
    model.addChildAlgorithm(search)
    return model


def test_model_chains_caption_into_search(plugin, worker_env, raster_pair, tmp_path):
    import processing

    model = caption_then_search_model()
    ok, issues = model.validate()
    assert ok, issues
    assert model.dependsOnChildAlgorithms("search") == {"caption"}
    assert [p.name() for p in model.parameterDefinitions()][:3] == ["before", "after", "query"]
    # The model's destination parameter (and result key) is "search:scored" (child id: output
    # name) on QGIS 3.22, the output's description made safe ("scored_changes") on 3.40 and 3.44.
    [destination] = [p.name() for p in model.destinationParameterDefinitions()]
    assert destination in ("search:scored", "scored_changes")
    scored_path = tmp_path / "scored.gpkg"
    before, after = raster_pair
    feedback = QgsProcessingFeedback()
    result = processing.run(model, {"before": str(before), "after": str(after), "query": "road",
                                    destination: str(scored_path)},
                            context=QgsProcessingContext(), feedback=feedback)
    scored = QgsVectorLayer(result[destination], "scored", "ogr")
    assert scored.isValid() and scored.featureCount() == 2  # 512 x 256 px in 256 px tiles
    names = scored.fields().names()
    assert {"tile_id", "caption", "change_score", "embedding", "q_road", "model_score"} <= set(names)
    rows = {f["tile_id"]: f for f in scored.getFeatures()}
    for f in rows.values():
        assert isinstance(f["caption"], str) and f["caption"].strip()
        assert isinstance(f["model_score"], float)
        # The search step scored the caption step's own embeddings: the same value the caption
        # run stored for the same query with the same model.
        assert f["model_score"] == pytest.approx(f["q_road"], abs=1e-5)
    # The intermediate layer was a real rsicrc GeoPackage (the search read its model from it).
    caption_out = result["CHILD_RESULTS"]["caption"]["OUTPUT"]
    assert caption_out.endswith(".gpkg|layername=changes")
    assert result["CHILD_INPUTS"]["search"]["INPUT"] == caption_out
    from osgeo import gdal

    ds = gdal.OpenEx(caption_out.split("|")[0], gdal.OF_VECTOR | gdal.OF_READONLY)
    meta = ds.GetLayerByName("changes").GetMetadata_Dict()
    ds = None
    assert meta["complete"] == "true" and '"q_road"' in meta["queries"]
