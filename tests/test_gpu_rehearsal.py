"""tools/gpu_rehearsal.py: its arithmetic, report and arguments (fast), its checkpoints' layouts, and one end-to-end
run on tiny checkpoints on the CPU (slow), so that the script is ready the day a GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bottleneck_utils.chapters import reproducibility
from bottleneck_utils.convert import drop_training_heads, original_to_diffusers
from bottleneck_utils.models import read_original_state_dict
from tools import gpu_rehearsal as rehearsal

ROOT = Path(__file__).resolve().parent.parent


def test_dit_xl_forward_is_the_papers_118_6_g_multiply_adds():
    macs = rehearsal.dit_forward_macs(hidden=1152, depth=28, tokens=256)  # 32×32 latents, patch 2
    assert macs / 1e9 == pytest.approx(118.6, abs=0.05)
    assert 2 * macs / 1e9 == pytest.approx(237.2, abs=0.1)  # "about 237 GFLOP"
    with pytest.raises(ValueError, match=">= 1"):
        rehearsal.dit_forward_macs(hidden=0, depth=28, tokens=256)


def test_fid_point_estimate_arithmetic():
    point = rehearsal.fid_point_estimate(images_per_s=10.0, flop_per_forward=1e9, peak_flop_s=1e12)
    assert point["forwards"] == 5000 * 50 * 2  # CFG: a conditional and an unconditional forward per step
    assert point["limit_s"] == pytest.approx(500.0) and point["estimate_s"] == pytest.approx(500.0)
    assert point["efficiency"] == pytest.approx(1.0)
    unguided = rehearsal.fid_point_estimate(20.0, 1e9, 1e12, cfg=False)
    assert unguided["limit_s"] == pytest.approx(250.0) and unguided["efficiency"] == pytest.approx(1.0)
    for bad in ((0.0, 1e9, 1e12), (1.0, -1.0, 1e12), (1.0, 1e9, float("nan"))):
        with pytest.raises(ValueError, match="must be > 0"):
            rehearsal.fid_point_estimate(*bad)


def fake_report(gpu: bool, size: str) -> dict:
    run = {"run": "similarity[dit]", "chapter": "similarity", "status": "ok", "wall_s": 12.5,
           "cuda_max_allocated_mib": 4321.0 if gpu else None, "peak_rss_mib": 900.0}
    failed = {"run": "pruning[dit]", "chapter": "pruning", "status": "failed", "wall_s": 3.0,
              "error": "ValueError: boom"}
    throughput = {"batch": 32, "steps": 50, "cfg_scale": 1.5, "bfloat16": {"images_per_s": 3.2},
                  "float32_tf32": {"images_per_s": 1.6}, "dit_own_sampler_bfloat16": {"images_per_s": 3.1}}
    point = rehearsal.fid_point_estimate(3.2, 2.372e11, 5e14)
    return {"rehearsal": {"device": "cuda" if gpu else "cpu", "device_name": "H100" if gpu else "x86_64",
                          "gpu": gpu, "size": size, "git_commit": "abc", "started_utc": "now", "wall_s": 100.0},
            "steps": {"build": {"status": "ok"}, "load": {"status": "left out (--skip)"},
                      "throughput": {"status": "ok"} | throughput,
                      "mask_overhead": {"status": "ok", "ratio": 1.01, "limit": 1.03, "checked": size == "xl",
                                        "within_limit": True},
                      "fid5k": {"status": "ok", "flop_per_forward": 2.372e11,
                                "bfloat16": {"matmul_flop_s": 5e14} | point}},
            "chapters": [run, failed]}


def test_report_and_table_writer(tmp_path):
    result = fake_report(gpu=True, size="xl")
    result["failures"] = rehearsal.failures(result)
    assert result["failures"] == ["chapter pruning[dit]: failed (ValueError: boom)"]  # --skip is no failure
    path, table = rehearsal.write_report(result, tmp_path / "out")
    assert json.loads(path.read_text())["chapters"][0]["cuda_max_allocated_mib"] == 4321.0
    text = table.read_text()
    assert "| similarity[dit] | ok | 12.5 | 4321 | 900 |" in text and "| pruning[dit] | failed |" in text
    assert "1.010 (≤ 1.03: yes)" in text and "237.2 G" in text and "images/s, float32/tf32" in text
    assert "images/s, DiT's own sampler, bfloat16 (batch 32, 50 steps, CFG 1.5) | 3.10" in text
    assert "26.0 min" in text and "| step load | left out (--skip) |" in text  # 5000 images at 3.2 images/s
    assert reproducibility.gpu_rehearsal(path)["rehearsal"]["device_name"] == "H100"


def test_the_appendix_never_shows_a_cpu_or_tiny_run_as_a_gpu_result(tmp_path):
    assert reproducibility.gpu_rehearsal(tmp_path / "missing.json") is None
    for gpu, size in ((False, "tiny"), (True, "tiny"), (False, "xl")):
        path, _ = rehearsal.write_report(fake_report(gpu, size), tmp_path / f"{gpu}-{size}")
        assert reproducibility.gpu_rehearsal(path) is None
    assert "--device cuda" in reproducibility.REHEARSAL_COMMAND
    assert reproducibility.rehearsal_section(path).startswith("No GPU has been lent")  # the last one: a CPU xl run
    path, _ = rehearsal.write_report(fake_report(True, "xl"), tmp_path / "gpu")
    assert reproducibility.rehearsal_section(path).startswith("GPU rehearsal on H100 (cuda, xl checkpoints)")


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "invalid choice"),
    (["--chapters", "nosuch"], "unknown chapters"),
    (["--budget-s", "-1"], "not a positive number"),
    (["--samples", "0"], "not a positive integer"),
    (["--models", "mdt"], "invalid choice"),
    (["--chapters", "pruning", "--models", "sit"], "runs on ['dit']"),
    ([], "required: --out"),
])
def test_bad_arguments_exit_with_one_line(argv, message, tmp_path, capsys):
    argv = argv if argv == [] else [*argv, "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as stop:
        rehearsal.parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        rehearsal.parse_args(["--device", "cpu", "--out", str(tmp_path / "file")])
    assert "is a file" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs --device cuda")
def test_cuda_without_a_gpu_says_so(tmp_path, capsys):
    assert rehearsal.main(["--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_defaults_follow_the_device(tmp_path):
    assert rehearsal.parse_args(["--out", str(tmp_path)]).size == "xl"
    cpu = rehearsal.parse_args(["--device", "cpu", "--out", str(tmp_path)])
    assert cpu.size == "tiny" and cpu.chapters == rehearsal.report.chapters()


def test_chapter_plan():
    paths = {"dit": "/w/dit", "sit": "/w/sit.pt", "repa": "/w/repa.pt"}
    plan = rehearsal.chapter_plan(["similarity", "pruning", "training_dynamics"], ["dit", "sit", "repa"], "xl", "cuda",
                                  paths, 32, "/w/ref.npz")
    runs = {run["run"]: run["parameters"] for run in plan}
    assert list(runs) == ["similarity[dit]", "similarity[sit]", "similarity[repa]", "pruning[dit]", "training_dynamics"]
    assert runs["similarity[repa]"] == {"model": "/w/repa.pt", "device": "cuda", "family": "repa"}
    assert "family" not in runs["similarity[dit]"]
    assert runs["pruning[dit]"]["n_samples"] == 32 and runs["pruning[dit]"]["reference_stats"] == "/w/ref.npz"
    assert runs["training_dynamics"] == {"device": "cuda"}  # the organism chapters run as they are
    with pytest.raises(ValueError, match="runs on"):
        rehearsal.chapter_plan(["pruning"], ["sit"], "xl", "cuda", paths, 32, "")
    with pytest.raises(ValueError, match="unknown chapters"):
        rehearsal.chapter_plan(["nosuch"], ["dit"], "xl", "cuda", paths, 32, "")


def test_every_planned_parameter_is_declared_by_its_chapter():
    import jupytext

    from tools import book

    paths = {"dit": "d", "sit": "s.pt", "repa": "r.pt"}
    for run in rehearsal.chapter_plan(rehearsal.report.chapters(), list(rehearsal.MODELS), "xl", "cuda", paths, 8,
                                      "r.npz"):
        declared = book.declared_parameters(jupytext.read(ROOT / "notebooks" / f"{run['chapter']}.md"))
        assert set(run["parameters"]) <= declared, run["run"]


def test_record_cell_writes_the_kernels_peak_memory(tmp_path):
    path = tmp_path / "memory.json"
    exec(rehearsal.record_cell(path), {})  # noqa: S102 -- the cell the script appends to each chapter
    record = json.loads(path.read_text())
    assert record["peak_rss_mib"] > 0
    assert ("cuda_max_allocated_mib" in record) == torch.cuda.is_initialized()


def test_tiny_checkpoints_have_the_upstream_layouts(tmp_path):
    """SiT's bare state dict and REPA's training checkpoint convert to diffusers (REPA's projectors dropped); the
    DiT folder is a pipeline folder models.load reads."""
    spec = rehearsal.SIZES["tiny"]
    paths = rehearsal.build_checkpoints(tmp_path, spec, "cpu")
    sit = torch.load(paths["sit"], weights_only=True)
    assert "blocks.1.attn.qkv.weight" in sit and sit["final_layer.linear.weight"].shape[0] == 4 * 8  # learned σ
    repa = torch.load(paths["repa"], weights_only=False)
    assert set(repa) == {"model", "ema", "opt", "args", "steps"} and "projectors.0.4.weight" in repa["ema"]
    state = drop_training_heads(read_original_state_dict(paths["repa"]))
    model = original_to_diffusers(state, num_heads=spec["heads"])
    assert model.config.out_channels == 4 and model.config.num_embeds_ada_norm == 1000
    assert json.loads((Path(paths["dit"]) / "model_index.json").read_text())["id2label"]["999"] == "class 999"
    assert (Path(paths["dit"]) / "vae" / "config.json").is_file()


def test_sd_vae_config_is_stable_diffusions():
    from diffusers import AutoencoderKL

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        vae = AutoencoderKL(**rehearsal.SD_VAE)
    assert sum(p.numel() for p in vae.parameters()) == pytest.approx(83.65e6, rel=0.01)  # sd-vae-ft-ema's 83.7M
    with torch.device("meta"):
        from diffusers import DiTTransformer2DModel

        spec = rehearsal.SIZES["xl"]
        dit = DiTTransformer2DModel(num_attention_heads=spec["heads"], attention_head_dim=spec["hidden"] // spec["heads"],
                                    in_channels=4, out_channels=8, num_layers=spec["depth"], sample_size=spec["latent"],
                                    patch_size=spec["patch"], num_embeds_ada_norm=spec["classes"])
    copies = sum(p.numel() for block in dit.transformer_blocks[1:] for p in block.norm1.emb.parameters())
    # DiT-XL/2's 675M, once the 27 extra per-block copies of the embedder diffusers keeps are left out
    assert (sum(p.numel() for p in dit.parameters()) - copies) / 1e6 == pytest.approx(675, rel=0.005)


def test_a_failed_step_is_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    import tempfile

    before = dict(os.environ), tempfile.gettempdir()

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(rehearsal, "measure_throughput", broken)
    out = tmp_path / "out"
    assert rehearsal.main(["--device", "cpu", "--out", str(out), "--skip", "mask_overhead", "chapters"]) == 1
    result = json.loads((out / "report.json").read_text())
    steps = result["steps"]
    assert steps["build"]["status"] == "ok" and steps["load"]["status"] == "ok"
    assert steps["throughput"] == {"status": "failed", "error": "RuntimeError: out of memory",
                                   "wall_s": steps["throughput"]["wall_s"]}
    assert steps["fid5k"]["status"] == "failed" and "throughput" in steps["fid5k"]["error"]
    assert steps["mask_overhead"]["status"] == "left out (--skip)"
    assert len(result["failures"]) == 2 and not (out / "work").exists()
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # nothing else is left
    assert (dict(os.environ), tempfile.gettempdir()) == before  # the kernels' environment is undone


@pytest.mark.slow
def test_end_to_end_on_tiny_checkpoints_on_the_cpu(tmp_path):
    """The whole script in a fresh process: every step, and one chapter through papermill on the tiny DiT folder."""
    out = tmp_path / "rehearsal"
    env = os.environ | rehearsal.ONE_THREAD | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_rehearsal.py"), "--device", "cpu", "--size",
                           "tiny", "--out", str(out), "--chapters", "similarity", "--models", "dit"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "report.json").read_text())
    about = result["rehearsal"]
    assert about["device"] == "cpu" and about["size"] == "tiny" and about["gpu"] is False and about["wall_s"] > 0
    assert result["failures"] == [] and all(step["status"] == "ok" for step in result["steps"].values())
    steps = result["steps"]
    assert set(steps["load"]["models"]) == {"dit"}
    assert steps["throughput"]["dit_own_sampler_bfloat16"]["images_per_s"] > 0  # learned σ: the DiT folder's
    for precision in ("bfloat16", "float32_tf32"):
        assert steps["throughput"][precision]["images_per_s"] > 0
        point = steps["fid5k"][precision]
        assert point["forwards"] == 5000 * 50 * 2 and point["estimate_s"] > 0 and 0 < point["efficiency"] < 1
    overhead = steps["mask_overhead"]
    assert overhead["ratio"] > 0 and overhead["checked"] is False  # a toy forward: recorded, not held to 3%
    assert overhead["removed_share"] == pytest.approx(rehearsal.TAIL_SHARE, abs=0.05)
    (run,) = result["chapters"]
    assert run["run"] == "similarity[dit]" and run["status"] == "ok" and run["wall_s"] > 0
    assert run["peak_rss_mib"] > 0 and "cuda_max_allocated_mib" not in run  # the kernel never touched CUDA
    assert (out / run["notebook"]).is_file() and (out / "report.md").is_file() and not (out / "work").exists()
    assert reproducibility.gpu_rehearsal(out / "report.json") is None  # never shown as a GPU result
