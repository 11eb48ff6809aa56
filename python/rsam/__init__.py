"""rsam: Segment Anything that keeps working on degraded images.

A drop-in for segment_anything's predictor API over rsam's C++ core (NumPy in
and out, no torch needed)::

    import rsam
    sam = rsam.sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")
    # or rsam.load(): the bundled rsam-tiny with its GaRA adapter
    predictor = rsam.SamPredictor(sam)
    predictor.set_image(image)  # HxWx3 uint8 RGB
    masks, scores, logits = predictor.predict(point_coords=..., point_labels=...)

and rsam.SamAutomaticMaskGenerator(sam).generate(image), plus what only rsam
has: adapters (model.load_adapter), GleSAM enhancers (model.load_enhancer),
rsam.degrade and rsam.list_corruptions. Errors raise rsam.Error (a RuntimeError) with a
one-line message.
"""
from ._rsam import (  # noqa: F401
    Error,
    Model,
    SamAutomaticMaskGenerator,
    SamPredictor,
    __version__,
    corruption_info,
    degrade,
    list_corruptions,
    load,
)

_OFFICIAL = ("vit_h", "vit_l", "vit_b")


def _builder(kind):
    def build(checkpoint=None, **kwargs):
        # rsam reads the architecture from the checkpoint's shapes; the
        # official names also check it, as the official builders would fail
        # on a mismatching state dict.
        if checkpoint is None and kind in _OFFICIAL:
            raise Error(f"sam_model_registry['{kind}'] needs checkpoint=...: rsam builds models from checkpoints only")
        model = load(checkpoint, **kwargs)
        if kind in _OFFICIAL and model.type != kind:
            raise Error(f"'{checkpoint}' holds a {model.type} model, not {kind}")
        return model

    build.__name__ = f"build_sam_{kind}"
    return build


# segment_anything.sam_model_registry: "default" takes any checkpoint (the
# official default is vit_h) and, without one, the bundled rsam-tiny.
sam_model_registry = {
    "default": _builder("default"),
    "vit_h": _builder("vit_h"),
    "vit_l": _builder("vit_l"),
    "vit_b": _builder("vit_b"),
    "rsam_tiny": _builder("rsam_tiny"),
}

__all__ = [
    "Error",
    "Model",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "corruption_info",
    "degrade",
    "list_corruptions",
    "load",
    "sam_model_registry",
]
