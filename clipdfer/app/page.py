"""The demo page (Gradio): upload videos or record one with the camera, pick a model, and see every face's timeline
plot, the annotated video and the table of windows, with downloads. Needs ``pip install 'clipdfer[demo]'``.

Private by default: Gradio's telemetry and version check are off, the theme uses the browser's own fonts (the page
loads nothing from the internet), the server listens on 127.0.0.1, and a public link is made only when asked.
"""

import logging
import os
import time
from typing import Dict, List, Optional, Sequence

# before Gradio is imported: no usage statistics, no version check (they are Gradio's only requests to the internet
# besides a share link's tunnel)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:
    import gradio as gr
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("the demo needs Gradio: pip install 'clipdfer[demo]'") from e

from ..inference import DEFAULT_MODEL, Predictor, sample_clip_path  # noqa: E402
from .analysis import (Predictors, SessionFiles, UploadLimits, analyse_video, check_uploads,  # noqa: E402
                       hide_paths, sigterm_as_interrupt, summary_markdown, upload_names, window_table)

__all__ = ["Demo", "THEME_FONTS", "UPLOAD_CAP"]

_logger = logging.getLogger(__name__)

THEME_FONTS = (["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
               ["ui-monospace", "SFMono-Regular", "Consolas", "monospace"])  # the browser's own: nothing to fetch
# Gradio stops an upload over this many times the size limit while it comes in (its own message); one up to that
# reaches the demo's check, whose message names the limit and what to do
UPLOAD_CAP = 2
# errors that say what went wrong and what to do (as the CLI's); any other is a bug: logged, and the page says so
_EXPLAINED = (ValueError, OSError, ImportError, RuntimeError)
_CSS = "#notice {border: 2px solid #b91c1c; border-radius: 6px; padding: 0 0.75em; color: #b91c1c}"
_MODEL_RUNS = "model"  # the concurrency group of every event that runs the model: one at a time


def _error(e: BaseException, names: Optional[Dict[str, str]] = None) -> gr.Error:
    """The page's message for ``e``, each server path of ``names`` replaced by the upload's name."""
    if isinstance(e, _EXPLAINED):
        return gr.Error(hide_paths(str(e), names or {}), title="Cannot run this", print_exception=False)
    _logger.exception("demo: unexpected error")
    return gr.Error(f"an unexpected error ({type(e).__name__}) stopped this run; the server's log has the details",
                    title="Error", print_exception=False)


class Demo:
    """The demo app: its page, its predictors and its temporary files.

    Its temporary files are its results (one folder per session, see :class:`~clipdfer.app.analysis.SessionFiles`)
    and Gradio's cache (Gradio's copies of the uploads, camera recordings and results), both in ``temp_dir``: Gradio
    reads its cache folder from the environment variable ``GRADIO_TEMP_DIR``, which the demo sets to
    ``temp_dir/gradio`` until :meth:`close` (and restores then), so one demo at a time per process.

    Args:
        model: the model selected when the page opens (a registered name, ``local-dir:`` or ``hf-hub:``; default:
            predict's default, :data:`clipdfer.inference.DEFAULT_MODEL`).
        pretrained: False starts with random weights (nothing downloaded; a notice on every result says the
            probabilities mean nothing).
        limits: what uploads are accepted (:class:`~clipdfer.app.analysis.UploadLimits`).
        device: where the model runs (default: CUDA when available).
        temp_dir: the folder for the temporary files (default: a new one in the system's temporary folder); removed
            by :meth:`close` and at exit.
        models: the models the page offers (default: ``model``, zero-shot CLIP and every registered set of weights).
        load: build the first model now, so that a model that cannot load fails here rather than in the page.

    Raises:
        ImportError: Gradio is not installed (when this module is imported).
        PretrainedWeightsError, ValueError: with ``load``, the model cannot be built.
    """

    def __init__(self, model: Optional[str] = None, pretrained: bool = True, *, limits: Optional[UploadLimits] = None,
                 device: Optional[str] = None, temp_dir: Optional[str] = None,
                 models: Optional[Sequence[str]] = None, load: bool = True):
        self.model, self.pretrained = model or DEFAULT_MODEL, bool(pretrained)
        self.limits = limits or UploadLimits()
        self.blocks = None
        self.files = SessionFiles(temp_dir)
        self.gradio_dir = os.path.join(self.files.root, "gradio")
        os.makedirs(self.gradio_dir, exist_ok=True)
        self._gradio_env = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = self.gradio_dir  # read by Gradio's components and server as they are made
        try:
            self.predictors = Predictors(lambda name, weights: Predictor(name, weights, device=device))
            if models is None:
                from ..models import list_pretrained
                models = ["clip_zeroshot_vitb32", DEFAULT_MODEL, *list_pretrained()]
            self.models = list(dict.fromkeys([self.model, *models]))
            if load:
                self.predictors.get(self.model, self.pretrained)
            self.blocks = self._build()
        except BaseException:
            self.close()
            raise

    # the handlers (the page's and the HTTP API's)

    def analyse(self, files, camera, model: str, random_weights: bool, request: gr.Request,
                progress=gr.Progress()):
        """Check the uploads, run the model on each, and show the first that worked."""
        paths = [*(files or []), *([camera] if camera else [])]
        given = [os.path.basename(f) for f in files or []] + (["camera" + os.path.splitext(camera)[1]] if camera
                                                              else [])
        uploads = list(zip(paths, upload_names(given)))
        names = {self.files.root: "(the demo's folder)", **dict(uploads)}  # an upload's path: its name
        try:
            durations = check_uploads(uploads, self.limits)
            if model not in self.models:
                raise ValueError(f"model {model!r} is not offered here: choose one of the list")
            progress(0, desc=f"loading {model}")
            predictor = self.predictors.get(model, not random_weights)
            folder = self.files.new_run(request.session_hash)
            results = []
            for i, ((path, name), seconds) in enumerate(zip(uploads, durations)):
                total = min(seconds or self.limits.max_seconds, self.limits.max_seconds)

                def step(window, i=i, name=name, total=total):
                    progress(min(1.0, (i + min(1.0, window.end / total)) / len(uploads)), desc=f"{name}: "
                             f"{window.end:.1f} s of {total:.0f}")

                progress(i / len(uploads), desc=name)
                results.append(analyse_video(predictor, path, name, os.path.join(folder, f"{i:02d}"), seconds,
                                             self.limits, on_window=step))
        except Exception as e:
            raise _error(e, names) from e
        if all(r.error is not None for r in results):
            raise gr.Error("\n".join(summary_markdown(r).replace("**", "") for r in results), title="No result",
                           print_exception=False)
        shown = next(r for r in results if r.error is None)
        return [results, *self._outputs(results, shown)]

    def sample(self, model: str, random_weights: bool, request: gr.Request, progress=gr.Progress()):
        """Run on the sample clip shipped with clipdfer."""
        return self.analyse([sample_clip_path()], None, model, random_weights, request, progress)

    def show(self, choice: str, results, request: gr.Request):
        """Show another upload's outputs (the session's: ``results`` is its state)."""
        done = [r for r in results or [] if r.error is None]
        if not done:
            raise gr.Error("nothing to show yet: run the model on a video first", print_exception=False)
        shown = next((r for r in done if r.name == choice), done[0])
        if request is not None and request.session_hash:
            self.files.touch(request.session_hash)
        if not all(os.path.exists(f) for f in [*shown.files, shown.plot]):
            raise gr.Error(f"the results of {shown.name} are no longer on the server (a session's files go "
                           f"{self.files.max_age / 60:g} minutes after its last run, or when "
                           f"{self.files.max_sessions} newer sessions ran): run it again", print_exception=False)
        return self._outputs(results, shown)

    def _outputs(self, results, shown) -> List:
        status = "\n\n".join(summary_markdown(r) for r in results)
        notice = shown.prediction.notice
        names = [r.name for r in results if r.error is None]
        headers, rows = window_table(shown.prediction)
        return [status, gr.Markdown(f"**{notice}**" if notice else "", visible=bool(notice)),
                gr.Dropdown(choices=names, value=shown.name, visible=len(names) > 1), shown.plot, shown.video,
                gr.Dataframe(value=rows, headers=headers), shown.files]

    def end_session(self, request: gr.Request) -> None:
        """The page was closed: its files go."""
        if request is not None and request.session_hash:
            self.files.remove(request.session_hash)

    # the page

    def _build(self) -> gr.Blocks:
        limits = self.limits
        with gr.Blocks(title="clipdfer demo", analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
            gr.Markdown(
                "# clipdfer: every face's expressions over time\n"
                "Upload videos (or record one with your camera), then **Run**. Each face is found and followed; "
                "sliding windows of its frames are scored by the model. Your videos and results stay on this server: "
                "the demo's files are deleted when you close the page, Gradio's copies once they are an hour old "
                "(checked every 10 minutes), and all of them when the server stops.")
            with gr.Row():
                with gr.Column(scale=2):
                    files = gr.File(file_count="multiple", file_types=list(limits.types), type="filepath",
                                    label=f"Videos ({', '.join(limits.types)}; up to {limits.max_videos}, "
                                          f"{limits.max_mb:g} MB and {limits.max_seconds:g} s each)",
                                    elem_id="videos")
                    gr.Markdown(f"Larger or longer? Cut it first, e.g. `ffmpeg -i in.mp4 -t "
                                f"{min(60, limits.max_seconds):g} -vf scale=640:-2 short.mp4`.", elem_id="limits")
                    # not mirrored: the recording is analysed as the camera saw it, as the same video uploaded
                    camera = gr.Video(sources=["webcam"], label="or record with your camera", elem_id="camera",
                                      webcam_options=gr.WebcamOptions(mirror=False))
                with gr.Column(scale=1):
                    model = gr.Dropdown(self.models, value=self.model, label="Model", elem_id="model")
                    random_weights = gr.Checkbox(not self.pretrained, label="Random weights (no download; the "
                                                 "probabilities mean nothing: a pipeline check)")
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    sample = gr.Button("Try the sample clip (3 s; NASA, public domain)", elem_id="sample")
            notice = gr.Markdown(visible=False, elem_id="notice")
            status = gr.Markdown(elem_id="status")
            choice = gr.Dropdown([], label="Show the results of", visible=False, elem_id="choice",
                                 allow_custom_value=True)  # the handler checks it: the session's uploads
            # the plot's caption above it, not on it: a label drawn over the image hid its first line (the notice)
            gr.Markdown("**Timeline**: each face's class probabilities over time", elem_id="plot-caption")
            plot = gr.Image(type="filepath", show_label=False, elem_id="plot", interactive=False,
                            buttons=["download", "fullscreen"])
            with gr.Row():
                video = gr.Video(label="Annotated video: each face's box, id and top class", elem_id="annotated",
                                 interactive=False, height=360, scale=3)
                downloads = gr.File(label="Downloads: JSON, CSV, annotated video", file_count="multiple",
                                    elem_id="downloads", interactive=False, scale=2)
            table = gr.Dataframe(label="Windows (a row per face and window)", elem_id="table", interactive=False)
            results = gr.State([])
            shown = [status, notice, choice, plot, video, table, downloads]
            # every event that runs the model is in one concurrency group of one: runs take turns
            run.click(self.analyse, [files, camera, model, random_weights], [results, *shown], api_name="analyse",
                      concurrency_id=_MODEL_RUNS, concurrency_limit=1)
            sample.click(self.sample, [model, random_weights], [results, *shown], api_name="sample",
                         concurrency_id=_MODEL_RUNS, concurrency_limit=1)
            choice.input(self.show, [choice, results], shown, api_name="show")
            blocks.unload(self.end_session)
        blocks.queue(default_concurrency_limit=1, max_size=32)
        return blocks

    def launch(self, host: str = "127.0.0.1", port: Optional[int] = None, share: bool = False, block: bool = True,
               quiet: bool = False) -> str:
        """Serve the page.

        Args:
            host: the address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
            port: the port (default: the first free one from 7860).
            share: also make a public link through Gradio's tunnel (the only case where the demo reaches the internet).
            block: wait until Ctrl-C or SIGTERM (:meth:`wait`), then stop and remove the temporary files; False
                returns once serving.
            quiet: print nothing (Gradio's lines: the URL, how to share).

        Returns:
            The local URL.

        Raises:
            OSError: ``port`` is in use (naming it).
        """
        theme = gr.themes.Default(font=THEME_FONTS[0], font_mono=THEME_FONTS[1])
        try:
            self.blocks.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=quiet,
                               max_file_size=int(UPLOAD_CAP * self.limits.max_mb * 1e6), theme=theme, css=_CSS,
                               show_error=False, footer_links=["api"], ssr_mode=False,
                               allowed_paths=[self.files.root])
        except OSError as e:
            self.close()
            if port is not None and "empty port" in str(e):
                raise OSError(f"port {port}: cannot listen on {host}:{port}: another server (an earlier demo?) uses "
                              f"it; stop it, choose another port, or leave the port unset for the first free one "
                              f"from 7860") from e
            raise
        except BaseException:
            self.close()
            raise
        if block:
            self.wait()
        return self.blocks.local_url

    def wait(self) -> None:
        """Serve until Ctrl-C, or SIGTERM in the main thread, then stop and remove the temporary files (as
        :meth:`close`)."""
        try:
            with sigterm_as_interrupt():
                while getattr(self.blocks, "is_running", False):
                    time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop the server (if it runs) and remove the temporary files (Gradio's cache of this demo included)."""
        try:
            if getattr(self.blocks, "is_running", False):
                self.blocks.close(verbose=False)
        finally:
            self.files.close()
            if os.environ.get("GRADIO_TEMP_DIR") == self.gradio_dir:
                if self._gradio_env is None:
                    del os.environ["GRADIO_TEMP_DIR"]
                else:
                    os.environ["GRADIO_TEMP_DIR"] = self._gradio_env

    def __enter__(self) -> "Demo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
