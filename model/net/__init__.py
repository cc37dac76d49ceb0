"""The RSICRC network's modules: the pair encoder (CLIP backbone, attentive encoder, fusion, pool)
and the caption decoder, named as the released state dict names them (`encoder.*`, `decoder.*`)."""
