"""The benchmark's pure parts: /proc parsing, CPU split, load-generator output, bodies, ratios, goals, JSON."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from bench import images, loadgen, memory_cost, procstat, report, servers, stacks
from bench.runner import Options, count_results, measure

PROC_STAT = """cpu  1000 50 200 5000 100 10 20 5 0 0
cpu0 500 25 100 2500 50 5 10 2 0 0
cpu1 500 25 100 2500 50 5 10 3 0 0
intr 12345
"""


def test_proc_stat_busy_leaves_out_idle_and_iowait() -> None:
    times = procstat.parse_proc_stat(PROC_STAT)
    assert times.busy == 1000 + 50 + 200 + 10 + 20 + 5
    assert times.total == times.busy + 5000 + 100


def test_proc_stat_without_cpu_line_is_an_error() -> None:
    with pytest.raises(ValueError):
        procstat.parse_proc_stat("intr 1\n")


def test_pid_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    fields = ["S", "77"] + ["0"] * 9 + ["120", "30"] + ["0"] * 30
    ppid, jiffies = procstat.parse_pid_stat("4242 (uvicorn (worker) 1) " + " ".join(fields))
    assert (ppid, jiffies) == (77, 150)


def test_own_pid_stat_parses() -> None:
    ppid, jiffies = procstat.parse_pid_stat(Path("/proc/self/stat").read_text())
    assert ppid > 0 and jiffies >= 0


def test_vm_lines() -> None:
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert procstat.parse_vm_kb(status, "VmRSS") == 102400
    assert procstat.parse_vm_kb(status, "VmHWM") == 204800
    assert procstat.parse_vm_kb(status, "VmSwap") is None


def test_descendants_follow_the_tree_and_nothing_else() -> None:
    stats = {1: (0, 0), 10: (1, 5), 11: (10, 7), 12: (11, 1), 20: (1, 100)}
    assert procstat.descendants([10], stats) == {10, 11, 12}
    assert procstat.tree_jiffies([10], stats) == 13
    assert procstat.descendants([999], stats) == set()


def test_cpu_share_gives_the_rest_to_others() -> None:
    before, after = procstat.CpuTimes(busy=0, total=0), procstat.CpuTimes(busy=300, total=400)
    share = procstat.cpu_share(
        before,
        after,
        {"server": 0, "bench": 0, "loadgen": 0},
        {"server": 150, "bench": 10, "loadgen": 40},
        wall_s=2.0,
        clk_tck=100,
    )
    assert share.total_cores == pytest.approx(1.5)
    assert share.groups == pytest.approx({"server": 0.75, "bench": 0.05, "loadgen": 0.2})
    assert share.others_cores == pytest.approx(0.5)
    assert share.as_dict()["server_cores"] == 0.75


def test_cpu_share_never_negative() -> None:
    share = procstat.cpu_share(
        procstat.CpuTimes(0, 0), procstat.CpuTimes(10, 20), {"server": 0}, {"server": 50}, wall_s=1.0, clk_tck=100
    )
    assert share.others_cores == 0.0


def test_measure_repeats_a_disturbed_phase_and_flags_it() -> None:
    calls: list[int] = []
    opts = Options(results=Path("."), max_other_cores=-1.0, retries=2, retry_pause_s=0.0)

    def work() -> int:
        calls.append(1)
        return len(calls)

    measured = measure("test", [], work, opts)
    assert len(calls) == 3 and measured.attempts == 3 and measured.disturbed
    assert len(measured.others_per_attempt) == 3


def test_measure_stops_at_the_first_quiet_attempt() -> None:
    opts = Options(results=Path("."), max_other_cores=1e9, retries=2, retry_pause_s=0.0)
    measured = measure("test", [], lambda: "done", opts)
    assert (measured.value, measured.attempts, measured.disturbed) == ("done", 1, False)


WRK_OUT = """Running 15s test @ http://127.0.0.1:8000/classify
WRKJSON {"requests":1000,"duration_us":10000000,"bytes":1,"errors":{"connect":0,"read":0,"write":0,"status":40,\
"timeout":0},"latency_us":{"mean":12000.5,"stdev":1.0,"max":90000,"p50":10000,"p90":20000,"p95":25000,"p99":50000,\
"p999":80000},"scheduled":0,"late":0,"late_ms_total":0.0}
"""


def test_wrk_result_counts_only_2xx_as_throughput() -> None:
    result = loadgen.parse_wrk(WRK_OUT, connections=4, images_per_request=16)
    assert result.ok == 960
    assert result.images_per_s == pytest.approx(960 * 16 / 10)
    assert result.latency_ms["p99"] == 50.0
    assert result.as_dict()["requests_per_s"] == 96.0


def test_wrk_without_result_line_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        loadgen.parse_wrk("Running...\n", connections=1, images_per_request=1)


def test_hey_csv_percentiles_over_2xx() -> None:
    rows = ["response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"]
    rows += [f"{(i + 1) / 1000:.4f},0,0,0,0,0,200,{i / 100:.4f}" for i in range(100)]
    rows += ["5.0000,0,0,0,0,0,503,1.0"]
    result = loadgen.parse_hey_csv(
        "\n".join(rows), connections=8, images_per_request=1, duration_s=2.0, target_rate_rps=50
    )
    assert (result.requests, result.ok) == (101, 100)
    assert result.latency_ms["p50"] == 50.0 and result.latency_ms["p99"] == 99.0
    assert result.statuses == {"200": 100, "503": 1}
    assert result.requests_per_s == 50.0


def test_percentile_nearest_rank() -> None:
    assert loadgen.percentile([], 50) == 0.0
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0


def test_open_loop_connections_cover_the_horizon_within_bounds() -> None:
    assert loadgen.open_loop_connections(400, horizon_s=0.3) == 120
    assert loadgen.open_loop_connections(400) == 240
    assert loadgen.open_loop_connections(1) == 16
    assert loadgen.open_loop_connections(1e6) == 512


def test_wrk_scripts_and_command_line(tmp_path: Path) -> None:
    assert "function delay" in loadgen.wrk_script(open_loop=True)
    assert "function delay" not in loadgen.wrk_script(open_loop=False)
    command = loadgen.Wrk(tmp_path).command(
        "http://127.0.0.1:9/classify", tmp_path, 7, "image/jpeg", connections=32, duration_s=15, rate_rps=250.0
    )
    assert "-c32" in command and "-d15s" in command and "http://127.0.0.1:9/classify" in command
    assert command[-6:] == [str(tmp_path), "7", "image/jpeg", "/classify", "250.0", "1"]
    assert "function delay" in (tmp_path / "open.lua").read_text()


def test_multipart_body_parses_back_to_the_same_images() -> None:
    parts = [b"\xff\xd8first", b"\xff\xd8second\r\n--not-a-boundary"]
    body = images.multipart_body(parts)
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {images.MULTIPART_TYPE}\r\n\r\n".encode() + body)
    payloads = [p.get_payload(decode=True) for p in message.iter_parts()]
    assert payloads == parts
    assert all(p.get_param("name", header="content-disposition") == "images" for p in message.iter_parts())


def test_bodies_cycle_through_the_images() -> None:
    out = images.bodies([b"a", b"b", b"c"], 1, 4, kind="raw")
    assert out == [b"a", b"b", b"c", b"a"]
    assert len(images.bodies([b"a", b"b"], 16, 3)) == 3
    with pytest.raises(ValueError):
        images.bodies([b"a"], 2, 1, kind="raw")


def test_v2_body_is_an_open_inference_request_of_base64_jpegs() -> None:
    """MLServer's body: one BYTES input whose elements decode back to the JPEGs, in order."""
    jpegs = [b"\xff\xd8first", b"\xff\xd8second"]
    request = json.loads(images.v2_body(jpegs))
    (tensor,) = request["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("images", "BYTES", [2])
    assert tensor["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(item) for item in tensor["data"]] == jpegs
    assert images.bodies(jpegs, 2, 1, kind="v2") == [images.v2_body(jpegs)]


def test_mlserver_spec_writes_its_settings_files(tmp_path: Path) -> None:
    """The settings MLServer reads: ports, workers, the model file, and batching in seconds and requests."""
    model = tmp_path / "model.int8.onnx"
    spec = servers.mlserver_spec(
        8123,
        {"BENCH_MODEL": str(model)},
        tmp_path / "mlserver",
        max_batch_size=32,
        max_batch_time_ms=5.0,
        parallel_workers=1,
        python=tmp_path / "bin" / "python",
    )
    settings = json.loads((tmp_path / "mlserver" / "settings.json").read_text())
    model_settings = json.loads((tmp_path / "mlserver" / "model-settings.json").read_text())
    assert settings["http_port"] == 8123 and settings["parallel_workers"] == 1
    assert len({settings["http_port"], settings["grpc_port"], settings["metrics_port"]}) == 3
    assert model_settings["implementation"] == "bench.peers.mlserver_runtime.Classifier"
    assert model_settings["parameters"]["uri"] == str(model)
    assert (model_settings["max_batch_size"], model_settings["max_batch_time"]) == (32, 0.005)
    assert spec.command == [str(tmp_path / "bin" / "mlserver"), "start", str(tmp_path / "mlserver")]
    assert spec.body == "v2" and spec.classify_path == "/v2/models/classifier/infer"


def test_catalogue_fallback_reads_the_committed_photos(tmp_path: Path) -> None:
    photos, source = images.load_jpegs(5, products=tmp_path / "none")
    assert len(photos) == 5 and all(p[:2] == b"\xff\xd8" for p in photos)
    assert "catalogue" in source


def _phase(server: str, profile: str, img_s: float, p99: float) -> dict[str, Any]:
    return {
        "profile": profile,
        "server": server,
        "disturbed": False,
        "attempts": 1,
        "cpu": {"others_cores": 0.05},
        "load": {
            "images_per_s": img_s,
            "requests_per_s": img_s,
            "connections": 4,
            "images_per_request": 16,
            "requests": 100,
            "ok": 100,
            "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99},
        },
    }


def _results() -> dict[str, Any]:
    return {
        "schema": report.SCHEMA,
        "started_at": "2026-01-01T00:00:00+00:00",
        "command": ["vitrine", "bench"],
        "machine": {"cpu_model": "test", "cpus": 2},
        "settings": {},
        "model": {},
        "ceilings": {
            "onnxruntime": {"images_per_s": 1400.0},
            "in_process": {"images_per_s": 900.0},
            "in_process_pipelined": {"images_per_s": 1000.0},
        },
        "servers": {
            "vitrine": {
                "cold_start_s": [1.0, 1.2, 3.0],
                "cold_start_median_s": 1.2,
                "rss_peak_mb": 250.0,
                "phases": {"A": _phase("vitrine", "A", 900.0, 100.0), "B": _phase("vitrine", "B", 550.0, 80.0)},
            },
            "bentoml": {
                "cold_start_s": [2.5],
                "rss_peak_mb": 400.0,
                "phases": {"A": _phase("bentoml", "A", 500.0, 200.0), "B": _phase("bentoml", "B", 400.0, 60.0)},
            },
        },
    }


def test_ratios_use_the_better_in_process_ceiling() -> None:
    ratios = report.compute_ratios(_results())
    assert ratios["in_process_ceiling"] == 1000.0
    assert ratios["vs_in_process"]["vitrine/A"] == 0.9
    assert ratios["vs_onnxruntime"]["bentoml/B"] == pytest.approx(0.286, abs=1e-3)
    assert ratios["vs_peer"]["bentoml/A"] == {
        "throughput_ratio": 1.8,
        "p99_ms": 100.0,
        "peer_p99_ms": 200.0,
        "p99_not_worse": True,
    }


def test_goals_need_throughput_and_tail_latency() -> None:
    results = _results()
    results["ratios"] = report.compute_ratios(results)
    goals = {g["name"]: g for g in report.evaluate_goals(results)}
    assert goals["A_vs_in_process"]["met"] is True
    assert goals["B_vs_in_process"]["met"] is False  # 0.55 < 0.60
    assert goals["A_vs_bentoml"]["met"] is True
    assert goals["B_vs_bentoml"]["met"] is False  # 1.375x and a worse p99
    assert goals["cold_start_s"]["met"] is True and goals["rss_peak_mb"]["met"] is True


def test_goals_not_measured_without_a_peer() -> None:
    results = _results()
    del results["servers"]["bentoml"]
    goals = {g["name"]: g for g in report.evaluate_goals(results)}
    assert goals["A_vs_bentoml"]["met"] is None and goals["A_vs_bentoml"]["value"] is None


def test_ceilings_measured_after_the_service_are_averaged_with_those_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ceiling becomes the mean of the loops before and after the service; both stay in the record."""
    from bench import runner
    from bench.procstat import CpuShare

    def measure(label: str, pids: list[int], work: Any, opts: Options) -> runner.Measured:
        # /proc/stat over a loop that takes microseconds is noise: the CPU shares are given, one loop disturbed.
        disturbed = label == "ceiling onnxruntime (after)"
        return runner.Measured(work(), CpuShare(1.0, 2.0, {}, 1.0 if disturbed else 0.0), 1, disturbed, 0, [0.0])

    monkeypatch.setattr(runner, "measure", measure)
    bench = runner.Bench.__new__(runner.Bench)  # no images or model: the loops below stand in for the ceilings
    bench.opts = Options(results=tmp_path)
    bench.results = {"ceilings": {}}

    def loop(rates: list[float]) -> Any:
        return lambda: {"images_per_s": rates.pop(0), "batch": 32}

    bench.ceiling_work = {"onnxruntime": loop([400.0, 500.0]), "in_process_pipelined": loop([100.0, 300.0])}
    bench.measure_ceilings("before")
    assert report.in_process_ceiling(bench.results["ceilings"]) == 100.0
    bench.measure_ceilings("after")
    alone, pipelined = bench.results["ceilings"]["onnxruntime"], bench.results["ceilings"]["in_process_pipelined"]
    assert (pipelined["before_images_per_s"], pipelined["after_images_per_s"]) == (100.0, 300.0)
    assert report.in_process_ceiling(bench.results["ceilings"]) == 200.0
    assert alone["images_per_s"] == 450.0 and alone["disturbed"] and not pipelined["disturbed"]
    rows = report.table_rows({**bench.results, "servers": {}})
    assert [(r[4], r[-1]) for r in rows] == [
        ("450", "DISTURBED; mean of 400 before and 500 after"),
        ("200", "mean of 100 before and 300 after"),
    ]


def test_table_lists_ceilings_then_phases_with_ratios() -> None:
    results = _results()
    results["ratios"] = report.compute_ratios(results)
    rows = report.table_rows(results)
    assert [r[0] for r in rows] == ["ceiling"] * 3 + ["vitrine", "vitrine", "bentoml", "bentoml"]
    vitrine_a = rows[3]
    assert vitrine_a[1] == "A" and vitrine_a[4] == "900" and vitrine_a[10] == "0.90"
    text = report.format_table(results)
    assert "| server | profile |" in text and "vitrine vs bentoml/A: 1.80x" in text
    assert "NOT MET" in text


def test_result_json_shape_round_trips(tmp_path: Path) -> None:
    results = _results()
    results["ratios"] = report.compute_ratios(results)
    results["goals"] = report.evaluate_goals(results)
    assert report.missing_keys(results) == []
    report.write_json(results, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text()) == results
    del results["servers"]["vitrine"]["phases"]["A"]["cpu"]
    del results["goals"]
    assert report.missing_keys(results) == ["goals", "servers.vitrine.phases.A.cpu"]


def test_count_results_for_each_answer_shape() -> None:
    vitrine = {"model": {}, "results": [{"category": {"label": "Tshirts"}}, {"category": {"label": "Watches"}}]}
    assert count_results(vitrine) == (2, ["Tshirts", "Watches"])
    assert count_results([{"category": {"label": "Heels"}}]) == (1, ["Heels"])
    mlserver = {
        "model_name": "classifier",
        "outputs": [
            {
                "name": "results",
                "shape": [2, 1],
                "datatype": "BYTES",
                "data": [json.dumps({"category": {"label": "Flats"}}), json.dumps({"category": {"label": "Caps"}})],
            }
        ],
    }
    assert count_results(mlserver) == (2, ["Flats", "Caps"])


COLLAPSED = """thread (1): MainThread;main (app/cli.py:88);Runner.run (asyncio/runners.py:118) 80
thread (2): vitrine-decode_0;_worker (concurrent/futures/thread.py:83);decode (app/preprocess.py:83);\
Image.resize (PIL/Image.py:2440) 30
thread (3): vitrine-decode_1;_worker (concurrent/futures/thread.py:83);decode (app/preprocess.py:80);\
ImageFile.load (PIL/ImageFile.py:300) 10
garbage line
"""


def test_stacks_group_pool_threads_and_rank_functions() -> None:
    parsed = stacks.parse_collapsed(COLLAPSED)
    assert [s.thread for s in parsed] == ["MainThread", "vitrine-decode", "vitrine-decode"]
    summary = stacks.summarise(parsed)
    decode = summary["vitrine-decode"]
    assert decode.samples == 40
    assert decode.self[0] == ("Image.resize (PIL/Image.py)", 30)
    assert decode.inclusive[0] == ("decode (app/preprocess.py)", 40)  # plumbing frames left out
    assert "threads busy" in stacks.format_summary(summary, duration_s=1.0)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    results = _results()
    results["ratios"] = report.compute_ratios(results)
    report.plot(results, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_cost_profiles_the_part_after_the_features(tiny_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_repo / "tiny" / "1" / "model.onnx"
    assert memory_cost.main([str(model), "--batches", "1,4", "--runs", "3", "--threads", "1"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[2].strip() for row in rows] == ["1", "4"]
    for row in rows:
        total, part = float(row[3]), float(row[4])
        assert 0 < part < total  # the heads run after the features, the convolutions before


def test_gpu_probe_checks_run_on_the_cpu_provider(tiny_repo: Path) -> None:
    """The probe's checks, with the CPU standing in for CUDA (CI has no GPU): same provider, same answers."""
    import numpy as np

    from app.preprocess import decode
    from app.repository import resolve
    from bench import gpu_probe

    version = resolve(tiny_repo, "tiny", None)
    precision = next(iter(version.metadata.files))
    jpegs, _ = images.load_jpegs(6, products=tiny_repo / "none")
    pixels = np.stack([decode(b, version.metadata.preprocessing) for b in jpegs])
    parity = gpu_probe.parity(version, pixels, precision, provider="cpu")
    assert {row["top1_agreement"] for row in parity["heads"].values()} == {1.0}
    placed = gpu_probe.placement(version.file_for(precision), pixels[:2], provider="cpu")
    assert set(placed["nodes_by_provider"]) == {"CPUExecutionProvider"}
    sweep = gpu_probe.batch_sweep(version.file_for(precision), pixels, [1, 3], 0.05, provider="cpu")
    assert [row["batch"] for row in sweep] == [1, 3] and all("device_input" not in row for row in sweep)
    rates = gpu_probe.decode_rates(jpegs, version, [1, 2], 0.05) + gpu_probe.decode_rates(
        jpegs, version, [2], 0.05, processes=True
    )
    assert [(r["pool"], r["workers"]) for r in rates] == [("threads", 1), ("threads", 2), ("processes", 2)]
    assert all(r["images_per_s"] > 0 for r in rates)


def test_cuda_bench_refuses_the_cpu_only_peers() -> None:
    from bench import cli

    args = cli.parser().parse_args(["--providers", "cuda"])
    with pytest.raises(SystemExit, match="--peers none"):
        cli.options(args, ["--providers", "cuda"])
    args = cli.parser().parse_args(["--providers", "cuda", "--peers", "none", "--ceiling-batch", "64"])
    opts = cli.options(args, [])
    assert (opts.providers, opts.peers, opts.ceiling_batch) == ("cuda", (), 64)


def test_every_bench_option_reaches_the_run_and_quick_shortens_it() -> None:
    import dataclasses

    from bench import cli
    from bench.runner import Options

    args = cli.parser().parse_args([])
    fields = {f.name for f in dataclasses.fields(Options)}
    assert set(vars(args)) - fields == {"quick", "verbose"}  # a new option needs an Options field of its name
    argv = ["--duration", "7", "--images", "32", "--env", "VITRINE_MAX_BATCH_DELAY_MS=2", "--variant", "x:VITRINE_A=1"]
    opts = cli.options(cli.parser().parse_args(argv), argv)
    assert (opts.duration_s, opts.n_images, opts.retries) == (7.0, 32, 2)
    assert opts.service_env == {"VITRINE_MAX_BATCH_DELAY_MS": "2"} and opts.variants == [("x", {"VITRINE_A": "1"})]
    assert opts.command == ["vitrine", "bench", *argv]
    quick = cli.options(cli.parser().parse_args(["--quick"]), [])
    assert (quick.duration_s, quick.warmup_s, quick.n_images, quick.retries, quick.cold_starts) == (3.0, 1.0, 64, 0, 1)
    assert opts.profiles == ("A", "B", "B-raw", "C50", "C90")  # C70 and C80 only when asked for
    assert opts.ceilings_after and not cli.options(cli.parser().parse_args(["--no-ceilings-after"]), []).ceilings_after


def test_the_bench_decodes_as_the_service_would_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --decode-processes the service keeps its own default (processes on a many-core CUDA host) and the
    in-process ceilings use the same count; with it, the service is told."""
    from app import settings as app_settings
    from bench import runner

    monkeypatch.setattr(app_settings, "available_cpus", lambda: 16)
    bench = runner.Bench.__new__(runner.Bench)
    for providers, asked, used in (("cuda", None, 14), ("cpu", None, 0), ("cuda", 3, 3), ("cuda", 0, 0)):
        bench.opts = Options(results=tmp_path, providers=providers, decode_processes=asked)
        assert runner.service_decode_processes(bench.opts) == used
        env = bench.vitrine_spec(8000).env
        assert env.get("VITRINE_DECODE_PROCESSES") == (None if asked is None else str(asked))
        if asked is None:
            assert app_settings.Settings(providers="cpu").layout(cuda=providers == "cuda").decode_processes == used


def test_micro_times_each_decode_stage_on_real_photos(photos: list[bytes]) -> None:
    from app.schema import Preprocessing
    from bench.micro import decode_stages

    stages = decode_stages(photos[:8], Preprocessing(size=64), seconds=0.04)
    assert list(stages) == [
        "header (open_image)",
        "pixels (draft + load)",
        "scaled (bilinear resize)",
        "padded (app decode)",
    ]
    assert all(us > 0 for us in stages.values())


def test_peer_answers_are_shaped_as_the_service_answers(
    client: TestClient, tiny_settings: Settings, photos: list[bytes]
) -> None:
    """The peers build /classify answers with the service's own HeadView, so the two can be compared."""
    from app.preprocess import decode
    from app.repository import configured
    from bench.peers.answers import classify_results

    files = [("images", (f"{i}.jpg", photo, "image/jpeg")) for i, photo in enumerate(photos[:3])]
    served = client.post("/classify?top_k=3", files=files).json()["results"]
    version = configured(tiny_settings)
    meta = version.metadata
    session = ort.InferenceSession(str(version.file_for("fp32")), providers=["CPUExecutionProvider"])
    pixels = np.stack([decode(photo, meta.preprocessing) for photo in photos[:3]])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"pixels": pixels}), strict=True))
    heads = {level: head for level in ("article", "sub", "master") if (head := meta.head_by_level(level))}
    peer = classify_results(outputs, heads, 3, 3)
    for mine, theirs in zip(peer, served, strict=True):
        assert set(mine) == {"index", "status", "category", "top_k"} <= set(theirs)
        for level in ("sub", "master"):
            assert mine["category"][level]["label"] == theirs["category"][level]["label"]
            assert mine["category"][level]["score"] == pytest.approx(theirs["category"][level]["score"], abs=1e-5)
        assert mine["category"]["label"] == theirs["category"]["label"]
        assert [t["label"] for t in mine["top_k"]] == [t["label"] for t in theirs["top_k"]]
        assert [t["score"] for t in mine["top_k"]] == pytest.approx([t["score"] for t in theirs["top_k"]], abs=1e-5)
    assert [result["index"] for result in peer] == [result["index"] for result in served] == [0, 1, 2]
    # A batching peer cannot know each image's position in its own request, so it leaves `index` out.
    assert all("index" not in result for result in classify_results(outputs, heads, 3, 3, indexed=False))


def test_peer_answers_import_without_the_service_stack() -> None:
    """The BentoML peer imports bench.peers.answers from its own venv, which has no orjson, FastAPI or starlette."""
    code = (
        "import sys\n"
        "for name in ('orjson', 'fastapi', 'starlette', 'uvicorn'):\n"
        "    sys.modules[name] = None\n"
        "import bench.peers.answers\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_a_process_tree_s_memory_counts_shared_pages_once_and_late_children_too() -> None:
    """PSS sums pages shared by a forked worker once (the RSS sum counts them per process), and the sampler
    looks for the server's processes at every sample, so a child started during the phase is measured."""
    from bench.procstat import PhaseMonitor, descendants, pid_stats, pss_kb, rss_kb

    code = (
        "import os, time\n"
        "time.sleep(0.6)\n"  # the phase has started: this is a process the tree did not have at its start
        'block = b"x" * (64 * 2**20)\n'  # one 64 MB object, touched, with no temporary copy beside it
        "if os.fork() == 0:\n"
        "    time.sleep(5); os._exit(0)\n"
        "time.sleep(5)\n"
    )
    server = subprocess.Popen(["bash", "-c", f"{sys.executable} -c '{code}' & wait"])
    try:
        monitor = PhaseMonitor([server.pid], interval_s=0.1)
        monitor.start()
        time.sleep(3.0)
        monitor.stop()
        tree = descendants([server.pid], pid_stats())
        rss, pss = rss_kb(tree), pss_kb(tree)
    finally:
        server.kill()
        subprocess.run(["pkill", "-P", str(server.pid)], check=False)
    assert monitor.rss_peak_kb > 120 * 1024  # the 64 MB block, in two processes
    assert pss < 0.75 * rss and monitor.pss_peak_kb < 0.75 * monitor.rss_peak_kb
