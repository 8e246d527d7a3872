"""Taking a run out: export, benchmark and serve."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import BENCHMARK_ENGINES, EXPORT_MATRIX
from ..errors import UserError
from .options import POSITIVE, SOME, Formatter, add_device, add_overwrite, number


def add_export(sub: argparse._SubParsersAction) -> None:
    o = sub.add_parser("export", formatter_class=Formatter, help="export a run as ONNX or TorchScript",
                       description="Write the model with its class names and preprocessing in the file, then check "
                                   "it against PyTorch on the run's validation images: max |logit difference| "
                                   "<= 1e-4 and the same top-1 class (fp32), or an accuracy drop of at most 1 point "
                                   "(--int8). A failed check exits 1 and keeps the file as NAME.check-failed.EXT; the "
                                   "numbers go to FILE.check.json in the run.")
    o.add_argument("run", help="run directory (runs/NAME) or run name")
    o.add_argument("--format", dest="fmt", choices=("onnx", "torchscript", "web", "openvino", "coreml", "litert"),
                   default="onnx",
                   help="onnx (portable: onnxruntime, other frameworks, phones), torchscript (PyTorch's own, "
                        "which PyTorch now marks deprecated), web: a folder with a page that runs the model in "
                        "the browser, offline, installable on a phone (ONNX Runtime Web), or openvino: "
                        "model.xml + model.bin for Intel CPUs and GPUs (pip install 'imgclf[openvino]'), or coreml: "
                        "model.mlpackage for iPhones and Macs (pip install 'imgclf[coreml]'; it converts anywhere, "
                        "predicts only on Apple's systems), or litert: model.tflite for Android and edge devices "
                        "(pip install 'imgclf[litert]'; --int8 too); web and openvino take whole photos "
                        "(--raw-input)")
    o.add_argument("--opset", type=number(int, 7), default=None,
                   help="ONNX opset (default: the exporter's own; the file's is in FILE.check.json)")
    o.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="any batch size, so bulk prediction batches (default); --no-dynamic-batch: one image per "
                        "call, for converters and runtimes that need every shape fixed")
    o.add_argument("--int8", action="store_true", help="static INT8 quantization (onnxruntime's, or LiteRT's with "
                                                       "--format litert), calibrated on training images")
    o.add_argument("--raw-input", action="store_true",
                   help="the ONNX file takes whole decoded photos (uint8 N x H x W x 3 RGB, any size) and does the "
                        "run's resize, crop and normalisation inside, so an app only decodes the photo; checked on "
                        "the photos as an app decodes them")
    o.add_argument("--output", default=None, help="file to write (default: RUN/model.onnx, model_int8.onnx, "
                                                  "model_raw.onnx or model.torchscript.pt; web: the folder "
                                                  "RUN/web)")
    o.add_argument("--check-images", type=SOME, default=256, help="validation images for the parity check")



def add_benchmark(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("benchmark", formatter_class=Formatter, help="inference and training speed per engine",
                       description="Images/s and latency at batch 1 and --batch-size for PyTorch eager, PyTorch "
                                   "compiled, ONNX Runtime fp32 and INT8 (exported to a temporary folder), and "
                                   "training images/s, on this machine; a run's validation images give each "
                                   "engine's accuracy (a bare model name is timed on random images).")
    b.add_argument("target", help="run directory or name, or a timm architecture name (random weights)")
    b.add_argument("--batch-size", type=SOME, default=64, help="the larger batch (batch 1 is always timed)")
    b.add_argument("--seconds", type=number(float, above=0), default=2.0, help="timing per engine and batch size")
    b.add_argument("--images", type=SOME, default=256, help="validation images to score each engine on")
    b.add_argument("--engines", "--formats", dest="engines", default=",".join(BENCHMARK_ENGINES),
                   help="comma-separated, from: " + ", ".join(dict.fromkeys(BENCHMARK_ENGINES + EXPORT_MATRIX))
                        + "; or all: a row per export target (" + ", ".join(EXPORT_MATRIX) + "; web runs the app "
                        "in headless Chromium, coreml is converted and sized but runs only on Apple's systems)")
    add_device(b, "cpu", help="cpu, cuda, cuda:N, mps or auto")
    b.add_argument("--output", default=None, help="also write the rows to a .csv or .json file")
    add_overwrite(b, "replace an existing --output file")



def add_serve(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("serve", formatter_class=Formatter, help="a web page and REST API for a model",
                       description="Serve a run, an exported .onnx file or a pretrained model name: GET / is a page "
                                   "to drop a photo on; POST /predict takes multipart 'files' or JSON base64 "
                                   "'images'; GET /labels, /metadata, /healthz; OpenAPI docs at /docs.")
    w.add_argument("model", help="run directory or name, .onnx file, or a pretrained model name")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    w.add_argument("--port", type=number(int, 1, 65535), default=8000, help="TCP port")
    w.add_argument("--workers", type=SOME, default=1, help="server processes, each with its own copy of the model")
    w.add_argument("--allowed-hosts", type=lambda text: text.split(","), default=[], metavar="NAMES",
                   help="comma-separated Host names to answer besides localhost, 127.0.0.1, [::1] and --host "
                        "(the name a proxy or other machines use; '*' answers any, giving up the DNS-rebinding "
                        "guard)")
    w.add_argument("--api-key", default=None, help="require this key in the X-API-Key header or as 'Authorization: "
                                                   "Bearer KEY'. A key given here shows in `ps`: prefer "
                                                   "--api-key-file or $IMGCLF_API_KEY")
    w.add_argument("--api-key-file", default=None, metavar="FILE", help="read the key from the first line of FILE")
    w.add_argument("--max-upload-mb", type=POSITIVE, default=10.0, help="largest request body")
    w.add_argument("--max-pixels", type=SOME, default=40_000_000, help="largest image, in pixels, from its header")
    w.add_argument("--max-files", type=SOME, default=16, help="images per request")
    w.add_argument("--decode-memory-mb", type=POSITIVE, default=256.0,
                   help="memory all images being decoded at once may hold (an image needing more alone gets 413; "
                        "when it is in use, a request waits 2 s, then gets 503 with Retry-After)")
    w.add_argument("--timeout", type=POSITIVE, default=10.0, help="seconds a client may take to send a request's "
                                                                  "headers, or between two parts of its body")
    w.add_argument("--max-connections", type=SOME, default=256, help="open connections; requests beyond get 503")
    w.add_argument("--max-batch", type=SOME, default=32, help="images per forward pass when requests arrive together")
    w.add_argument("--batch-wait-ms", type=number(float, 0), default=5.0, help="how long the first image waits for others")
    add_device(w, "cpu", help="cpu, cuda, cuda:N or mps (PyTorch models)")


def cmd_export(args: argparse.Namespace) -> None:
    from ..deploy.export import export, summary
    from ..inference.classifier import Classifier

    if args.raw_input and args.fmt == "litert":  # said before a model is loaded
        raise UserError("--raw-input is for --format onnx: a LiteRT file takes the image an app has resized to "
                        "the model's size (uint8 NHWC), with the normalisation inside")
    clf = Classifier.load(args.run, device="cpu")
    if args.fmt == "web":
        from ..deploy.web import export_web

        result = export_web(clf, args.output, args.check_images)
        print(f"web app written to {result.path} ({sum(p.stat().st_size for p in result.path.iterdir()) / 1e6:.1f} MB)")
        print(f"model check passed: {summary(result)}")
        print(f"try it: python -m http.server -d {result.path} 8000, then open http://localhost:8000 (any static "
              f"host serves it; once opened it works offline and installs on a phone's home screen)")
        return
    if args.fmt == "openvino":
        from ..deploy.openvino import export_openvino

        result = export_openvino(clf, args.output, args.check_images)
        print(f"exported {result.path} and its .bin ({result.check['bytes'] / 1e6:.1f} MB), "
              f"{result.check['latency_ms_batch1']:.1f} ms for one photo here")
        print(f"parity check passed: {summary(result)}")
        print(f"predict with it alone: imgclf predict {result.path} IMAGES")
        return
    if args.fmt == "coreml":
        from ..deploy.coreml import coreml_summary, export_coreml

        result = export_coreml(clf, args.output, args.check_images)
        print(f"exported {result.path} ({result.check['bytes'] / 1e6:.1f} MB): an image classifier with the class "
              f"names and the normalisation inside")
        print(f"checked: {coreml_summary(result)}")
        return
    if args.fmt == "litert":
        from ..deploy.litert import export_litert, litert_summary

        result = export_litert(clf, args.output, args.int8, args.check_images)
        print(f"exported {result.path} ({result.check['bytes'] / 1e6:.2f} MB; labels.txt and export.json beside "
              f"it), {result.check['latency_ms_batch1']:.2f} ms for one image here")
        print(f"parity check passed: {litert_summary(result)}")
        print(f"predict with it alone: imgclf predict {result.path} IMAGES")
        return
    result = export(clf, args.fmt, args.output, args.opset, args.dynamic_batch, args.int8, args.check_images,
                    args.raw_input)
    print(f"exported {result.path} ({result.check['bytes'] / 1e6:.1f} MB) in {result.check['seconds']:.1f} s")
    print(f"parity check passed: {summary(result)}")
    if args.fmt == "onnx":
        print(f"predict with it alone: imgclf predict {result.path} IMAGES")


def cmd_benchmark(args: argparse.Namespace) -> None:
    from ..deploy.benchmark import as_dicts, benchmark, format_rows
    from ..device import resolve_device
    from ..inference.inputs import check_output, write_rows

    if args.output:
        check_output(Path(args.output), args.overwrite)  # before minutes of timing
    engines = EXPORT_MATRIX if args.engines == "all" else tuple(e.strip() for e in args.engines.split(",") if e.strip())
    rows = benchmark(args.target, args.batch_size, args.seconds, args.images, str(resolve_device(args.device)),
                     engines, log=lambda m: print(m, file=sys.stderr))
    print(format_rows(rows))
    if args.output:
        write_rows(as_dicts(rows), Path(args.output), args.overwrite)
        print(f"{len(rows)} row(s) written to {args.output}")


def cmd_serve(args: argparse.Namespace) -> None:
    from ..deploy.guards import Limits, resolve_api_key
    from ..deploy.serve import serve

    limits = Limits(int(args.max_upload_mb * 2**20), args.max_pixels, args.max_files,
                    int(args.decode_memory_mb * 2**20), timeout_s=args.timeout)
    api_key = resolve_api_key(args.api_key, args.api_key_file)  # an empty key stops here, before the model loads
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    serve(args.model, args.host, args.port, args.workers, api_key, limits, args.device, args.max_batch,
          args.batch_wait_ms, args.allowed_hosts, args.max_connections)


# command -> (what adds its parser, what runs it)
COMMANDS = {"export": (add_export, cmd_export), "benchmark": (add_benchmark, cmd_benchmark), "serve": (add_serve, cmd_serve)}
