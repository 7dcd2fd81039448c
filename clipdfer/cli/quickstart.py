"""``clipdfer quickstart``: create a model and run it on the built-in demo clip."""

import time

HELP = "create a model and run it on the built-in demo clip"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="clipdfer_vitb32_dfew", help="registered model name (see `clipdfer models`)")
    parser.add_argument("--pretrained", action="store_true",
                        help="load the model's default weights (downloaded once: the Hub, or a release URL)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import torch

    from ..demo import demo_clip, normalize_clip
    from ..models import create_model

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = create_model(args.model, pretrained=args.pretrained).eval()
    built = time.perf_counter() - start
    cfg = model.pretrained_cfg
    video = normalize_clip(demo_clip(model.num_frames, cfg.input_size[-1]), cfg.mean, cfg.std).unsqueeze(0)
    with torch.inference_mode():
        model(video)  # first call also encodes and caches the class texts
        start = time.perf_counter()
        probs = model(video).softmax(-1)[0]
        forward = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model        {args.model}  ({n_params / 1e6:.1f} M parameters, built in {built:.1f} s)")
    print(f"input        built-in demo clip {tuple(video.shape)} (B, T, 3, H, W), a drawn face that starts to smile")
    print(f"forward      {forward * 1e3:.1f} ms on the CPU, {torch.get_num_threads()} threads")
    notice = model.weights_notice()
    if notice:
        print(f"NOTICE       this model has {notice}: the probabilities below show that it runs, not what the "
              "face expresses.")
    print("class probabilities:")
    for p, name in sorted(zip(probs.tolist(), model.class_names), reverse=True):
        print(f"  {name:<16} {p:6.3f}  {'#' * int(round(40 * p))}")
    return 0
