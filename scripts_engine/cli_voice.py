"""Voice commands: ``voices`` (profiles and the regions they serve) and ``synth``.

``synth TEXT --voice ID --format F -o OUT`` writes one prompt. The text is split into
sentences, which are cached as segments in the audio folder, so repeated sentences are never
synthesised twice. ``synth --customers FILE --channel call -o DIR`` renders each customer's call
script and synthesises it with the voice of their region (see :func:`synthesize_customers`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from scripts_engine.audio import FORMATS
from scripts_engine.audiostore import AudioStore, StoredAudio, atomic_write, default_store
from scripts_engine.config import Settings, get_settings
from scripts_engine.errors import DataError, SynthesisError
from scripts_engine.voice import VoiceCatalog, VoiceProfile, get_catalog

_SENTENCE = re.compile(r"(?<=[。！？；!?;\n])")
#: Show a progress bar from this many segments or customers on.
PROGRESS_FROM = 4


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else get_settings()


def register(group: click.Group) -> None:
    """Add ``voices`` and ``synth`` to the command group."""
    group.add_command(voices)
    group.add_command(synth)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def voices(ctx: click.Context, as_json: bool) -> None:
    """List the voice profiles and the provinces and cities each one serves."""
    catalog = get_catalog(_settings(ctx).voices_dir)
    rows: list[dict[str, Any]] = []
    for voice in catalog.profiles.values():
        provinces, cities = catalog.served(voice.id)
        rows.append(
            {
                "id": voice.id,
                "name": voice.name,
                "kind": voice.kind,
                "flavour": voice.flavour,
                "engine_voice": voice.espeak_id,
                "rate": voice.rate,
                "pitch": voice.pitch,
                "lexicons": list(voice.lexicons),
                "default": voice.id == catalog.default,
                "provinces": provinces,
                "cities": cities,
            }
        )
    if as_json:
        click.echo(
            json.dumps({"voices": rows, "catalog_version": catalog.version()}, ensure_ascii=False)
        )
        return
    for row in rows:
        click.echo(
            f"{row['id']:<14} {row['name']}  [{row['engine_voice']}, rate {row['rate']}, pitch {row['pitch']}]"
        )
        if row["flavour"]:
            click.echo(f"{'':<14} flavour: {row['flavour']}")
        served = "、".join(
            row["provinces"] + [c for c in row["cities"] if c not in row["provinces"]]
        )
        if row["default"]:
            served = (served + "; " if served else "") + "default for every other region"
        click.echo(f"{'':<14} serves: {served or '(no region; choose it with --voice)'}")


def _split(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _copy_out(stored: StoredAudio, out: Path) -> Path:
    """Copy a stored prompt (and its label sidecar) to ``out``, atomically."""
    if out.is_dir():
        out = out / f"{stored.key[:16]}-{stored.format}{stored.path.suffix}"
    elif not out.suffix:  # diallers pick raw formats by extension: never write one without
        out = out.with_name(out.name + stored.path.suffix)
    atomic_write(out, stored.path.read_bytes())
    if stored.label_path is not None:
        atomic_write(out.with_name(out.name + ".json"), stored.label_path.read_bytes())
    return out


@click.command()
@click.argument("text", required=False)
@click.option("--voice", "voice_id", help="Voice profile id (see `voices`); default: by region.")
@click.option("--province", help="Choose the voice by the customer's province.")
@click.option("--city", help="Choose the voice by the customer's city.")
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="wav8k", show_default=True,
    help="wav8k for Asterisk .wav; sln/alaw/ulaw raw (sln16 for wideband); alaw-wav/ulaw-wav "
    "for FreeSWITCH; wav16k for a browser preview.",
)  # fmt: skip
@click.option(
    "-o", "--output", "out", type=click.Path(path_type=Path), required=True,
    help="Output file (or folder); with --customers, a folder.",
)  # fmt: skip
@click.option(
    "--customers", type=click.Path(path_type=Path, dir_okay=False), help="CSV/Parquet/JSONL."
)
@click.option("--channel", type=click.Choice(["call"]), default="call", show_default=True)
@click.pass_context
def synth(
    ctx: click.Context,
    text: str | None,
    voice_id: str | None,
    province: str | None,
    city: str | None,
    fmt: str,
    out: Path,
    customers: Path | None,
    channel: str,
) -> None:
    """Synthesise TEXT (or '-' for stdin) into one prompt file for the dialler."""
    settings = _settings(ctx)
    catalog = get_catalog(settings.voices_dir)
    if customers is not None:
        if text:
            raise SynthesisError("give either TEXT or --customers, not both")
        synthesize_customers(
            customers, out, fmt=fmt, settings=settings, catalog=catalog, voice_id=voice_id
        )
        return
    if text is None:
        raise SynthesisError("nothing to say: give TEXT, '-' for stdin, or --customers FILE")
    if text == "-":
        text = sys.stdin.read()
    voice = catalog.get(voice_id) if voice_id else catalog.choose(province, city)
    sentences = _split(text)
    if not sentences:
        raise SynthesisError("nothing to say: the text is empty")
    store = default_store(settings=settings)
    stored = _with_progress(store, sentences, voice, fmt)
    path = _copy_out(stored, out)
    label = f"{voice.id}, {voice.label}"
    click.echo(f"{path}  ({fmt}, {stored.duration_s:.1f} s, voice {label})")


def _with_progress(
    store: AudioStore, sentences: list[str], voice: VoiceProfile, fmt: str
) -> StoredAudio:
    from scripts_engine.audio import get_format

    audio_format = get_format(fmt)
    with tqdm(
        total=len(sentences), desc="synth", unit="seg", file=sys.stderr,
        disable=len(sentences) < PROGRESS_FROM,
    ) as bar:  # fmt: skip
        keys = store.ensure_segments([(s, voice) for s in sentences], audio_format, bar.update)
        bar.update(bar.total - bar.n)
    return store.assemble(keys, voice, audio_format)


def synthesize_customers(
    customers: Path,
    out_dir: Path,
    *,
    fmt: str,
    settings: Settings,
    catalog: VoiceCatalog,
    voice_id: str | None = None,
) -> list[Path]:
    """Render each customer's call script and synthesise it with their region's voice.

    Trains the default model first if there is none (as ``score`` does).

    Raises:
        SynthesisError: prompts failed twice.
        DataError: the customers file cannot be used.
    """
    from scripts_engine.speech import SynthesisPool

    scripts, failures = customer_scripts(customers, settings=settings)
    for customer_id, error in failures:
        click.secho(
            f"{customers}: customer {customer_id}: not rendered: {error}", fg="red", err=True
        )
    if not scripts:
        raise DataError(f"{customers}: no customer could be rendered")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for customer_id, province, city, segments in scripts:
        voice = catalog.get(voice_id) if voice_id else catalog.choose(province, city)
        jobs.append((customer_id, [s for s in segments if s.strip()], voice))
    paths = []
    with SynthesisPool(settings.synth_workers, timeout=settings.synth_timeout_s) as pool:
        store = AudioStore(settings.resolved_audio_dir, catalog=catalog, synth=pool)
        show = len(jobs) >= PROGRESS_FROM
        with (
            tqdm(desc="new segments", unit="seg", file=sys.stderr, disable=not show) as seg_bar,
            tqdm(
                total=len(jobs), desc="prompts", unit="call", file=sys.stderr, disable=not show
            ) as bar,
        ):
            prompts = [(t, v) for _, t, v in jobs]
            stored = store.synthesize_prompts(prompts, fmt, bar.update, seg_bar.update)
    manifest = []
    for (customer_id, _, voice), item in zip(jobs, stored, strict=True):
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", customer_id) + item.path.suffix
        target = out_dir / name
        if item.label_path:
            atomic_write(target.with_name(target.name + ".json"), item.label_path.read_bytes())
        atomic_write(target, item.path.read_bytes())
        paths.append(target)
        manifest.append({"customer_id": customer_id, "voice": voice.id, "file": name,
                         "sha256_key": item.key, "duration_s": round(item.duration_s, 2)})  # fmt: skip
    not_rendered = [{"customer_id": c, "error": e} for c, e in failures]
    report = {"prompts": manifest, "not_rendered": not_rendered}
    atomic_write(
        out_dir / "manifest.json", json.dumps(report, ensure_ascii=False, indent=1).encode()
    )
    note = f"; {len(failures)} customers not rendered (see stderr)" if failures else ""
    click.echo(
        f"{len(paths)} prompts in {out_dir} ({fmt}, {store.synthesised} new segments "
        f"synthesised); manifest.json lists them{note}"
    )
    return paths


def customer_scripts(
    customers: Path, *, settings: Settings, channel: str = "call"
) -> tuple[list[tuple[str, str | None, str | None, list[str]]], list[tuple[str, str]]]:
    """Score and render every customer in a file: ``(id, province, city, segment texts)``
    per customer, plus ``(id, error)`` for each customer whose script could not be rendered.
    """
    from scripts_engine.cli_core import load_engine
    from scripts_engine.errors import ScriptsEngineError
    from scripts_engine.features import load_customers
    from scripts_engine.render import Renderer

    engine = load_engine(settings)
    loaded = load_customers(customers, engine.grid)
    for error in loaded.errors[:20]:
        click.secho(f"{customers}: {error}", fg="red", err=True)
    batch = loaded.batch
    result = engine.score(batch)
    renderer = Renderer(settings.personas_dir, grid=engine.grid)
    names = engine.grid.tag_names
    scripts, failures = [], []
    for i in range(len(batch)):
        record = batch.record(i)
        customer_id = str(batch.ids[i])
        profile = engine.profiles.profiles[int(result.assignment.profile_index[i])]
        scores = {names[j]: float(result.tags.scores[i, j]) for j in range(len(names))}
        try:
            script = renderer.render_script(record, profile.id, scores, channel=channel)
        except ScriptsEngineError as exc:
            failures.append((customer_id, str(exc)))
            continue
        texts = [segment.text for segment in script.main]
        scripts.append((customer_id, record.get("province"), record.get("city"), texts))
    return scripts, failures
