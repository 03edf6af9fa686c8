"""Voice benchmark: (a) the product against espeak-ng called directly; (b) a campaign with the
segment cache against synthesising each customer's whole script. Prints figures, then one line
of JSON.

(a) The same sentences, voices, rates, pitches and volumes, in the same run: the product path
(dialect text already prepared, ``Pyttsx3Synthesizer.synthesize``: pyttsx3 with every
VOICE-NOTES workaround, WAV written and read back) in one spawned process, and the bundled
``libespeak-ng`` through ctypes in synchronous mode (``espeak_Synth`` with a callback that
collects the samples) in another. The product's time runs to the dialler's file (conditioned,
8 kHz WAV bytes in memory). Median time per prompt; target ratio <= 2.

(b) N customers (default 2000): call scripts from the real renderer when it and a fitted model
are available (the shipped demo customers), otherwise realistic synthetic scripts (said in the
output). Both paths use the same pool of spawned workers and write one wav8k file per customer:
"whole" synthesises every customer's script (stage by stage) and conditions, encodes and writes
it; "cached" is :meth:`AudioStore.synthesize_prompts` on an empty store (every distinct sentence
synthesised once, prompts assembled from the cache). Target ratio >= 10.

Usage: python benchmarks/bench_voice.py [--customers 2000] [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts_engine import audio  # noqa: E402
from scripts_engine.audiostore import AudioStore, atomic_write  # noqa: E402
from scripts_engine.config import get_settings  # noqa: E402
from scripts_engine.speech import ENGINE_RATE, SynthesisPool, engine_version  # noqa: E402
from scripts_engine.voice import VoiceCatalog, VoiceProfile, get_catalog  # noqa: E402

SENTENCES = [
    "您好，这里是银行客服中心，您本月的信用卡账单已经出来了，请您及时还款，谢谢。",
    "您尾号1234的信用卡本期应还12,345.60元，最后还款日是2026-11-23。",
    "我是银行的智能语音助手，本次通话由人工智能合成语音播报。",
    "如果您现在不方便，或者不希望接到这类电话，直接告诉我就好，我们马上停止。",
    "近期三个月定期存款的年化利率是1.85%，起存金额五万元。",
    "理财非存款、产品有风险、投资须谨慎，业绩比较基准不构成收益承诺。",
    "如需帮助，请拨打客服热线95511，工作时间9:00-18:00。",
    "感谢您的耐心收听，祝您生活愉快，再见。",
]
VOICES = ["cmn-female", "cmn-male", "yue-female", "cmn-sichuan", "cmn-northeast"]


# --- (a) product against the library --------------------------------------------------------


_STATE: dict = {}


def _product_round(jobs: list[tuple[str, VoiceProfile]]) -> list[tuple[float, float]]:
    """One timed pass of the product over the jobs (the engine persists in this child): per
    prompt, the synthesis time and the time to the dialler's file (conditioned 8 kHz WAV)."""
    from scripts_engine.speech import Pyttsx3Synthesizer

    if "synth" not in _STATE:
        _STATE["synth"] = Pyttsx3Synthesizer()
        for text, voice in jobs:  # warm-up: engine creation, voice loading
            _STATE["synth"].synthesize(text, voice)
    synth, times, fmt = _STATE["synth"], [], audio.FORMATS["wav8k"]
    for text, voice in jobs:
        start = time.perf_counter()
        pcm = synth.synthesize(text, voice)
        spoken = time.perf_counter()
        samples = audio.condition(pcm, ENGINE_RATE, fmt.rate)
        audio.wav_bytes(audio.encode_samples(samples, "pcm16"), fmt, {})
        times.append((spoken - start, time.perf_counter() - start))
    return times


def _direct_round(jobs: list[tuple[str, dict]]) -> list[float]:
    """One timed pass of libespeak-ng called directly (synchronous mode, same parameters)."""
    if "speak" not in _STATE:
        _STATE["speak"] = _direct_speaker()
        for text, p in jobs:
            _STATE["speak"](text, p)
    speak, times = _STATE["speak"], []
    for text, p in jobs:
        start = time.perf_counter()
        speak(text, p)
        times.append(time.perf_counter() - start)
    return times


def _direct_speaker():  # noqa: ANN202
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    if lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0) != ENGINE_RATE:
        raise RuntimeError("espeak-ng did not initialise")
    callback_type = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )
    chunks: list[bytes] = []

    def collect(wav: ctypes._Pointer, count: int, events: int) -> int:
        if count > 0:
            chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    _STATE["callback"] = callback_type(collect)  # keep it alive
    lib.espeak_SetSynthCallback(_STATE["callback"])
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
    rate, volume, pitch = 1, 2, 3  # espeak_PARAMETER

    def speak(text: str, p: dict) -> bytes:
        chunks.clear()
        lib.espeak_SetVoiceByName(p["id"].encode())
        lib.espeak_SetParameter(rate, p["rate"], 0)
        lib.espeak_SetParameter(volume, p["volume"], 0)
        lib.espeak_SetParameter(pitch, p["pitch"], 0)
        data = text.encode()
        lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0x1 | 0x1000, None, None)  # UTF8|ENDPAUSE
        return b"".join(chunks)

    return speak


def bench_engine(catalog: VoiceCatalog, rounds: int) -> dict:
    jobs = [
        (catalog.speech_text(s, catalog.get(v)), catalog.get(v)) for v in VOICES for s in SENTENCES
    ]
    params = [
        {"id": v.espeak_id, "rate": v.rate, "pitch": v.pitch, "volume": int(round(v.volume * 100))}
        for _, v in jobs
    ]
    direct_jobs = [(t, p) for (t, _), p in zip(jobs, params, strict=True)]
    ctx = multiprocessing.get_context("spawn")
    product: list[tuple[float, float]] = []
    direct: list[float] = []
    # two persistent children, rounds interleaved, so both see the same machine load
    with ctx.Pool(1) as product_child, ctx.Pool(1) as direct_child:
        for r in range(rounds):
            order = [(product_child, _product_round, jobs, product),
                     (direct_child, _direct_round, direct_jobs, direct)]  # fmt: skip
            for child, fn, args, out in order if r % 2 == 0 else order[::-1]:
                out += child.apply(fn, (args,))
    spoken = statistics.median(t for t, _ in product)
    whole = statistics.median(t for _, t in product)
    d = statistics.median(direct)
    return {"prompts": len(jobs), "rounds": rounds, "product_ms": round(whole * 1000, 2),
            "synthesis_ms": round(spoken * 1000, 2), "direct_ms": round(d * 1000, 2),
            "ratio": round(whole / d, 2), "synthesis_ratio": round(spoken / d, 2)}  # fmt: skip


# --- (b) a campaign --------------------------------------------------------------------------

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
PLACES = [("广东", "广州"), ("四川", "成都"), ("黑龙江", "哈尔滨"), ("北京", "北京"), ("上海", "上海"),
          ("香港", "香港"), ("重庆", "重庆"), ("辽宁", "沈阳"), ("浙江", "杭州"), ("湖北", "武汉")]  # fmt: skip
STAGES = {
    "opening": ["这里是安和银行客户服务中心，我是智能语音助手小安，本次通话由人工智能合成语音播报。如果您现在不方便，直接告诉我就好。"],
    "value": [
        "最近存款利率下调，很多客户都在琢磨手里的钱怎么安排更合适。三个月定期的年化利率是1.85%，五万元起存。",
        "您是我们的老客户了，信用卡按时还款记录一直很好。本月起，消费满3000元可以申请分期，手续费打八折。",
        "退休以后收入以养老金为主，讲究细水长流。我们有一款稳健型的储蓄产品，随存随取，适合日常备用金。",
        "孩子上学的开销越来越大，提前规划教育金很重要。每月定投500元起，可以随时调整金额。",
        "房贷利率近期有调整，您的贷款可以申请转换定价基准。整个流程在手机银行上就能办理，大约三分钟。",
        "出国旅行用卡有讲究，我们的全币种信用卡境外消费免货币转换费，还能累计双倍积分。",
    ],
    "disclosure": ["理财非存款、产品有风险、投资须谨慎。业绩比较基准不构成收益承诺，过往业绩不代表未来表现。"],
    "close": ["如果您感兴趣，我稍后把详细介绍发到您的手机上，您看可以吗？", "您可以在手机银行首页搜索“定期存款”自助办理，也可以到就近网点咨询。"],
    "signoff": ["如需帮助请拨打客服热线95511。感谢您的耐心收听，祝您生活愉快，再见。"],
}  # fmt: skip


def synthetic_scripts(n: int, catalog: VoiceCatalog) -> list[tuple[list[str], VoiceProfile]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        province, city = PLACES[int(rng.integers(len(PLACES)))]
        honorific = SURNAMES[int(rng.integers(len(SURNAMES)))] + (
            "女士" if rng.random() < 0.5 else "先生"
        )
        values = rng.choice(len(STAGES["value"]), size=2, replace=False)
        texts = [f"{honorific}，您好！" + STAGES["opening"][0]]
        texts += [STAGES["value"][int(j)] for j in values]
        texts += STAGES["disclosure"] + [STAGES["close"][i % 2]] + STAGES["signoff"]
        out.append((texts, catalog.choose(province, city)))
    return out


def rendered_scripts(n: int, catalog: VoiceCatalog) -> list[tuple[list[str], VoiceProfile]] | None:
    settings = get_settings()
    try:
        from scripts_engine.cli_voice import customer_scripts

        scripts, _ = customer_scripts(settings.demo_customers_file, settings=settings)
    except Exception as exc:  # renderer or model missing: fall back, and say so
        print(f"renderer not usable ({type(exc).__name__}: {exc}); using synthetic scripts")
        return None
    scripts = (scripts * (n // max(1, len(scripts)) + 1))[:n]
    return [(texts, catalog.choose(province, city)) for _, province, city, texts in scripts]


def _whole(
    catalog: VoiceCatalog,
    pool: SynthesisPool,
    scripts: list[tuple[list[str], VoiceProfile]],
    out: Path,
    batch: int = 16,
) -> None:
    """Synthesise every customer's whole script, a few customers at a time (all of them at
    once would hold hours of 22 kHz audio in memory)."""
    fmt = audio.FORMATS["wav8k"]
    for first in range(0, len(scripts), batch):
        chunk = scripts[first : first + batch]
        spoken = [(catalog.speech_text(t, v), v) for texts, v in chunk for t in texts]
        pcms, pos = pool.synthesize_all(spoken), 0
        for i, (texts, voice) in enumerate(chunk, start=first):
            parts = [audio.condition(p, ENGINE_RATE, 8000) for p in pcms[pos : pos + len(texts)]]
            pos += len(texts)
            data = audio.encode_samples(np.concatenate(parts), "pcm16")
            label = audio.aigc_label(produce_id=f"whole-{i}")
            info = audio.wav_info(label, voice=voice.id, engine="")
            atomic_write(out / f"{i}.wav", audio.wav_bytes(data, fmt, info))


def bench_campaign(catalog: VoiceCatalog, n: int, workers: int) -> dict:
    scripts = rendered_scripts(n, catalog)
    source = "rendered (scripts_engine.render, shipped demo customers)"
    if scripts is None:
        scripts, source = synthetic_scripts(n, catalog), "synthetic (renderer not available)"
    chars = sum(len(t) for texts, _ in scripts for t in texts)
    with tempfile.TemporaryDirectory() as tmp, SynthesisPool(workers, timeout=60) as pool:
        pool.synthesize_all([("预热。", catalog.get(v)) for v in VOICES])  # start the workers
        start = time.perf_counter()
        store = AudioStore(Path(tmp) / "cached", catalog=catalog, synth=pool)
        stored = store.synthesize_prompts(scripts, "wav8k")
        cached = time.perf_counter() - start
        start = time.perf_counter()
        (Path(tmp) / "whole").mkdir()
        _whole(catalog, pool, scripts, Path(tmp) / "whole")
        whole = time.perf_counter() - start
        seconds = sum(s.duration_s for s in stored)
        distinct_prompts = len({s.key for s in stored})
    return {"customers": n, "scripts": source, "characters": chars,
            "audio_hours": round(seconds / 3600, 2), "workers": workers,
            "distinct_prompts": distinct_prompts, "segments_synthesised": store.synthesised,
            "whole_s": round(whole, 2), "cached_s": round(cached, 2),
            "speedup": round(whole / cached, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    args = parser.parse_args()
    catalog = get_catalog()
    print(f"engine: {engine_version()}")
    a = bench_engine(catalog, args.rounds) if args.part != "b" else None
    b = bench_campaign(catalog, args.customers, args.workers) if args.part != "a" else None
    if a:
        print(f"(a) {a['prompts']} prompts x {a['rounds']} rounds, median per prompt: product "
              f"{a['product_ms']} ms to the wav8k file ({a['synthesis_ms']} ms of it synthesis), "
              f"direct libespeak-ng {a['direct_ms']} ms -> {a['ratio']}x (target <= 2); "
              f"synthesis alone {a['synthesis_ratio']}x")  # fmt: skip
    if b:
        print(f"(b) {b['customers']} customers, {b['scripts']}: {b['audio_hours']} h of audio; "
              f"whole scripts {b['whole_s']} s, segment cache {b['cached_s']} s "
              f"({b['segments_synthesised']} distinct sentences synthesised, "
              f"{b['distinct_prompts']} distinct prompts) -> {b['speedup']}x (target >= 10)")  # fmt: skip
    ok = (a is None or a["ratio"] <= 2) and (b is None or b["speedup"] >= 10)
    print(
        json.dumps(
            {"benchmark": "voice", "engine": a, "campaign": b, "targets_met": ok},
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
