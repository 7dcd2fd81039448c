"""torch.hub entry points: every registered model and pretrained tag of clipdfer.

    model = torch.hub.load("clipdfer/clipdfer", "clipdfer_vitb32_dfew", pretrained=True)
    model = torch.hub.load("path/to/clipdfer", "dferclip_vitb32_ferv39k.ferv39k", source="local", pretrained=True)

Each entry point is ``clipdfer.create_model(name, pretrained=pretrained, **kwargs)``; ``torch.hub.list`` lists them and
``torch.hub.help`` shows the model's pretrained cfg.
"""

dependencies = ["torch", "torchvision", "timm", "open_clip", "huggingface_hub", "safetensors", "numpy", "PIL"]


def _entry_point(name: str):
    def entry_point(pretrained: bool = False, **kwargs):
        import clipdfer
        return clipdfer.create_model(name, pretrained=pretrained, **kwargs)

    import clipdfer
    cfg = clipdfer.get_pretrained_cfg(name)
    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = (f"clipdfer.create_model({name!r}, pretrained=pretrained, **kwargs): "
                           f"{cfg.num_frames} frames of {cfg.input_size[1]}x{cfg.input_size[2]}, classes "
                           f"{list(cfg.class_names or [])}, weights {cfg.name} ({cfg.license or 'licence not stated'})")
    return entry_point


def _entry_points():
    import clipdfer
    names = clipdfer.list_models() + [n for n in clipdfer.list_pretrained() if n not in clipdfer.list_models()]
    return {name: _entry_point(name) for name in names}


globals().update(_entry_points())  # names with a tag hold a dot: torch.hub.load reads them with getattr
