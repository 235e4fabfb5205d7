"""Bad files and bad targets, as a careless user meets them: every file the pipeline reads (manifest, config.json,
meta.json, weights, .pt checkpoints, hub ids) fails in one line naming the file and what to do; every output target
(a file where a folder goes, a folder where a file goes, a read-only folder) and every setting that would make NaN
images is refused before any sampling, with nothing written and the files that existed unchanged.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_bundle, tiny_transformer
from diffusers import DDIMScheduler
from safetensors.torch import save_file

from bottleneck_utils import images as image_io
from bottleneck_utils import integrity, metrics, models, sampling
from bottleneck_utils.flow import FlowODE
from tests import synthetic
from tests.test_bad_inputs import Evil, one_line

IMAGES = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
CONFLICTED = '{\n<<<<<<< HEAD\n  "mnist-dit": {"sha256": "aa"}\n=======\n  "mnist-dit": {"sha256": "bb"}\n>>>>>>> other\n}\n'


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: equal snapshots mean nothing was written, moved or removed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def forward_calls(bundle) -> list:
    calls = []
    bundle.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


def flow_bundle():
    bundle = tiny_bundle()
    bundle.scheduler, bundle.time = FlowODE(noise_time=0.0), models.FAMILIES["sit"]
    return bundle


@pytest.fixture
def read_only(monkeypatch):
    """Makes the folder it is given read-only as a non-root user sees it (root may write anywhere, so chmod won't)."""
    def make(folder: Path) -> Path:
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != folder and access(path, mode))
        return folder

    return make


def organism_folder(folder: Path, weights: str = "model.safetensors", **overrides) -> Path:
    """A tiny trained-organism folder as the trainer saves it: config, meta, weights (or the embedder only), and
    the DDIM scheduler; ``overrides`` change the config the weights come from (so they no longer fit)."""
    folder.mkdir(parents=True)
    transformer = tiny_transformer()
    transformer.save_config(folder)
    state = tiny_transformer(**overrides).state_dict()
    if weights == "embedder.safetensors":
        state = {k.removeprefix("transformer_blocks.0.norm1.emb."): v for k, v in state.items()
                 if k.startswith("transformer_blocks.0.norm1.emb.")}
    save_file(state, folder / weights)
    meta = {"class_names": [str(i) for i in range(5)], "condition": None, "recipe": {"objective": "ddpm"}}
    (folder / "meta.json").write_text(json.dumps(meta))
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A tiny organism shipped as ``mnist-dit`` (the manifest records its sha256), in a private checkpoint folder."""
    folder = organism_folder(tmp_path / "checkpoints" / "mnist-dit")
    manifest = {"mnist-dit": {"sha256": integrity.sha256_of(folder / "model.safetensors")}}
    (tmp_path / "checkpoints" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(integrity, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    return folder


# ---------------------------------------------------------------------------------------------------
#                          Output targets: checked before any sampling, nothing written
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target, match", [
    ("a-file", "the output folder .*a-file is a file; pass a folder path"),
    ("a-file/png", r"a-file/png cannot be written: .*a-file is a file"),
])
def test_sample_refuses_a_png_folder_that_is_or_lies_under_a_file_before_any_step(bundle, tmp_path, target, match):
    (tmp_path / "a-file").write_text("notes")
    before, calls = snapshot(tmp_path), forward_calls(bundle)
    with pytest.raises(ValueError, match=match) as raised:
        sampling.sample(bundle, [0, 1], num_steps=2, progress=False, output_dir=tmp_path / target)
    one_line(raised)
    assert calls == [] and snapshot(tmp_path) == before


@pytest.mark.parametrize("target, match", [
    ("a-folder", r"a-folder is a folder; pass a file path such as .*a-folder/samples\.npz"),
    ("a-file/s.npz", r"a-file/s\.npz cannot be written: .*a-file is a file"),
])
def test_sample_sharded_refuses_a_bad_npz_target_before_any_step(bundle, tmp_path, target, match):
    (tmp_path / "a-file").write_text("notes")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder" / "kept.txt").write_text("kept")
    before, calls = snapshot(tmp_path), forward_calls(bundle)
    with pytest.raises(ValueError, match=match) as raised:
        sampling.sample_sharded(bundle, [0, 1], npz_path=tmp_path / target, num_steps=2, progress=False)
    one_line(raised)
    assert calls == [] and snapshot(tmp_path) == before


def test_sample_refuses_a_read_only_folder_before_any_step(bundle, tmp_path, read_only):
    read_only(tmp_path)
    calls = forward_calls(bundle)
    with pytest.raises(PermissionError, match="png cannot be written: .* is read-only; choose a writable folder") as e:
        sampling.sample(bundle, [0, 1], num_steps=2, progress=False, output_dir=tmp_path / "png")
    one_line(e)
    assert calls == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer, target, error, match", [
    ("write_pngs", "a-file", ValueError, "is a file; pass a folder path"),
    ("write_pngs", "a-file/png", ValueError, "a-file is a file"),
    ("write_pngs", "read-only/png", PermissionError, "read-only is read-only"),
    ("save_npz", "a-folder", ValueError, "is a folder; pass a file path"),
    ("save_npz", "a-file/s.npz", ValueError, "a-file is a file"),
    ("save_npz", "read-only/s.npz", PermissionError, "read-only is read-only"),
])
def test_writers_refuse_a_bad_target_and_leave_every_file_as_it_was(tmp_path, read_only, writer, target, error, match):
    (tmp_path / "a-file").write_text("notes")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-folder" / "000000_0.png").write_bytes(b"an earlier image")
    read_only(tmp_path / "read-only")
    (tmp_path / "read-only").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(error, match=match) as raised:
        getattr(image_io, writer)(IMAGES, [0, 1], tmp_path / target)
    one_line(raised)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file", "a-folder", "read-only"]


@pytest.mark.parametrize("flag, target, match", [
    ("--npz", "a-folder", "is a folder; pass a file path"),
    ("--npz", "a-file/s.npz", "a-file is a file"),
    ("--png-dir", "a-file", "is a file; pass a folder path"),
    ("--png-dir", "read-only/png", "read-only is read-only"),
])
def test_sampling_cli_refuses_a_bad_output_before_the_model_loads(tmp_path, capsys, monkeypatch, read_only, flag,
                                                                  target, match):
    monkeypatch.setattr(sampling, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "a-file").write_text("notes")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "read-only").mkdir()
    read_only(tmp_path / "read-only")
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        sampling.main(["mnist-dit", "--num-samples", "4", flag, str(tmp_path / target)])
    assert exit_.value.code == 2 and snapshot(tmp_path) == before
    assert match in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
#                        Settings that cannot give images: refused, not NaN images
# ---------------------------------------------------------------------------------------------------


def test_more_steps_than_the_scheduler_was_trained_with_is_refused_before_any_step(bundle):
    calls = forward_calls(bundle)
    with pytest.raises(ValueError, match="num_steps must be <= 1000, the timesteps tiny's scheduler was trained") as e:
        sampling.sample(bundle, [0, 1], num_steps=1001, progress=False)
    one_line(e)
    assert calls == []


@pytest.mark.parametrize("make", [tiny_bundle, flow_bundle], ids=["ddim", "flow"])
def test_a_guidance_scale_that_overflows_names_the_setting_and_writes_nothing(tmp_path, make):
    with pytest.raises(ValueError, match=r"NaN or inf pixels with cfg_scale=1e\+38.*lower cfg_scale") as raised:
        sampling.sample(make(), [0, 1], num_steps=2, cfg_scale=1e38, progress=False, output_dir=tmp_path / "png")
    one_line(raised)
    with pytest.raises(ValueError, match=r"cfg_scale=1e\+38"):
        sampling.sample_sharded(make(), [0, 1], npz_path=tmp_path / "s.npz", num_steps=2, cfg_scale=1e38,
                                progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["Heun", "EULER", "rk4", "dopri5"])
def test_a_flow_solver_of_an_unknown_name_is_refused_not_run_as_euler(method):
    bundle = flow_bundle()
    with pytest.raises(ValueError, match=rf"flow solver \(method\) must be one of .*got '{method}'") as raised:
        bundle.scheduler.method = method
    one_line(raised)
    assert bundle.scheduler.method == "heun"
    with pytest.raises(ValueError, match="flow solver"):
        FlowODE(method=method)


@pytest.mark.parametrize("labels, outside", [([12, 0, 1, 2], "12"), ([-1, 0, 1, 2], "-1")])
def test_class_accuracy_refuses_labels_that_are_not_classes_of_the_classifier(labels, outside):
    probs = np.eye(3)[[0, 0, 1, 2]]
    with pytest.raises(ValueError, match=rf"labels \[{outside}\] are outside 0\.\.2, the classes of probs") as raised:
        metrics.class_accuracy(probs, np.array(labels))
    one_line(raised)
    reference = metrics.Reference.from_features(np.random.default_rng(0).normal(size=(4, 2)))
    with pytest.raises(ValueError, match="are outside 0..2"):
        metrics.SampleSet.build(np.random.default_rng(1).normal(size=(4, 2)), np.array(labels), reference, probs)


# ---------------------------------------------------------------------------------------------------
#                        The manifest, and the reader every JSON file goes through
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, match", [
    (CONFLICTED, "holds git merge-conflict markers"),
    ('{"mnist-dit": {"sha256": "aa"', r"is not valid JSON \(.*\): it is truncated or damaged"),
    ('{"mnist-dit": "aa"}', r"has no sha256 string for \['mnist-dit'\]"),
])
def test_a_damaged_manifest_names_itself_and_git_checkout(shipped, content, match):
    manifest = shipped.parent / "manifest.json"
    manifest.write_text(content)
    with pytest.raises(ValueError, match=match) as raised:
        models.load("mnist-dit")
    message = one_line(raised)
    assert str(manifest) in message and "git checkout bottleneck_utils/checkpoints/manifest.json" in message


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers (~7 s on 2 cores)
def test_importing_the_models_with_a_conflicted_manifest_fails_in_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text(CONFLICTED)
    code = ("from pathlib import Path; from bottleneck_utils import integrity; "
            f"integrity.CHECKPOINT_DIR = Path({str(tmp_path)!r}); import bottleneck_utils.models")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "JSONDecodeError" not in result.stderr
    assert last.startswith("ValueError: the checkpoint manifest") and "merge-conflict markers" in last


@pytest.mark.parametrize("content, error, match", [
    (None, FileNotFoundError, "quality.json is missing; measure it again"),
    (b'{"per_digit": 0.9', ValueError, r"quality.json is not valid JSON \(Expecting .*line 1\)"),
    (b"[1, 2]", ValueError, "holds a JSON list, not a dict"),
    (b"\xff\xfe{}", ValueError, "cannot be read"),
    (CONFLICTED.encode(), ValueError, "merge-conflict markers"),
])
def test_read_json_names_the_file_what_it_is_and_the_fix(tmp_path, content, error, match):
    path = tmp_path / "quality.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=match) as raised:
        integrity.read_json(path, "the measured quality", "measure it again")
    assert one_line(raised).startswith(f"the measured quality {path}") and raised.value.__cause__ is None


# ---------------------------------------------------------------------------------------------------
#                       Organism folders: shipped (sha-checked) and training runs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, what", [
    ("config.json", "the model config"),
    ("meta.json", "the organism's meta"),
    ("scheduler/scheduler_config.json", "DDIMScheduler"),
])
def test_a_truncated_shipped_json_names_the_file_and_how_to_restore_it(shipped, name, what):
    truncate(shipped / name)
    before = snapshot(shipped.parent)
    with pytest.raises(ValueError, match=what) as raised:
        models.load("mnist-dit")
    message = one_line(raised)
    assert str(shipped / name.split("/")[0]) in message and "git checkout" in message
    assert "python -m bottleneck_utils.organisms.cli organism mnist-dit --install" in message
    assert snapshot(shipped.parent) == before


def test_a_conflicted_meta_json_says_so(shipped):
    assert models.load("mnist-dit").num_classes == 5  # the tiny organism loads while undamaged
    (shipped / "meta.json").write_text(CONFLICTED)
    with pytest.raises(ValueError, match=r"meta.json holds git merge-conflict markers.*resolve the conflict") as e:
        models.load("mnist-dit")
    one_line(e)


@pytest.mark.parametrize("weights", ["model.safetensors", "embedder.safetensors"])
def test_a_truncated_run_weights_file_names_the_file_and_the_fix(tmp_path, weights):
    run = organism_folder(tmp_path / "runs" / "tiny", weights)
    truncate(run / weights)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file .*truncated") as raised:
        models.load(str(run))
    assert f"the run {run} is damaged: delete it and train it again" in one_line(raised)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("weights", ["model.safetensors", "embedder.safetensors"])
def test_run_weights_of_another_shape_name_the_first_misfit(tmp_path, weights):
    run = organism_folder(tmp_path / "run", weights, attention_head_dim=4)
    with pytest.raises(ValueError, match=f"tensors of .*{weights} do not fit the model \\(size mismatch for ") as e:
        models.load(str(run))
    assert "delete it and train it again" in one_line(e)


# ---------------------------------------------------------------------------------------------------
#                        .pt checkpoints, pipeline folders, hub ids and .npz samples
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_dict():
    return synthetic.original_dit_state_dict(seed=0)


def test_a_truncated_pt_names_the_file_and_says_download_it_again(tmp_path, state_dict):
    path = synthetic.save_checkpoint(tmp_path / "DiT-S-2.pt", state_dict)
    truncate(path)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint .*truncated.*download it again") as raised:
        models.load(str(path))
    assert str(path) in one_line(raised)


@pytest.mark.parametrize("key, shape, full, match", [
    ("y_embedder.embedding_table.weight", (11, 100), False, "do not fit the model .*size mismatch for timestep_embed"),
    ("y_embedder.embedding_table.weight", (11, 100), True, "do not fit the model .*size mismatch for transformer_b"),
    ("blocks.0.attn.qkv.weight", (10, synthetic.HIDDEN), True, r"do not fit the model \(size mismatch for .*to_q"),
    ("x_embedder.proj.weight", (synthetic.HIDDEN,), True, r"x_embedder.proj.weight has shape \(384,\).*4-D"),
    ("y_embedder.embedding_table.weight", (11,), False, r"embedding_table.weight has shape \(11,\).*2-D"),
])
def test_a_pt_of_the_wrong_shape_is_one_line(tmp_path, state_dict, key, shape, full, match):
    path = synthetic.save_checkpoint(tmp_path / "DiT-S-2.pt", state_dict | {key: torch.zeros(shape)})
    with pytest.raises(ValueError, match=match) as raised:
        models.load(str(path), full=full, num_heads=synthetic.HEADS if full else None)
    assert str(path) in one_line(raised) and "download it again" in str(raised.value)


def test_a_state_pt_that_would_run_code_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"step": 3, "model": Evil()}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"state.pt holds a pickled posix\.system, which is not loaded.*delete") as e:
        integrity.read_checkpoint(tmp_path / "state.pt", "delete the run and train it again")
    one_line(e)
    assert not (tmp_path / "pwned-by-pickle").exists()


@pytest.mark.parametrize("name", ["facebook/DiT-XL-2-256é", "facebооk/DiT-XL-2-256"])  # é; Cyrillic о
def test_a_hub_id_with_non_ascii_characters_is_one_line_before_any_download(name, monkeypatch):
    monkeypatch.setattr(models, "_hub_snapshot", lambda repo: pytest.fail("the hub was asked"))
    for call in (models.load, models.check_model):
        with pytest.raises(ValueError, match="is not a valid hub id: .* is not ASCII.*retype the id") as raised:
            call(name)
        one_line(raised)


def test_a_truncated_pipeline_index_names_the_file(tmp_path):
    synthetic.tiny_pipeline_folder(tmp_path / "pipe")
    truncate(tmp_path / "pipe" / "model_index.json")
    with pytest.raises(ValueError, match=r"pipeline index .*model_index.json is not valid JSON.*download or save") as e:
        models.load(str(tmp_path / "pipe"))
    one_line(e)


@pytest.mark.parametrize("damage", [truncate, lambda path: path.write_bytes(b"")], ids=["truncated", "empty"])
def test_a_damaged_npz_names_the_file(tmp_path, damage):
    path = image_io.save_npz(IMAGES, [0, 1], tmp_path / "samples.npz")
    damage(path)
    with pytest.raises(ValueError, match=r"samples.npz is not a readable \.npz .*truncated.*sample it again") as e:
        image_io.load_npz(path)
    one_line(e)


def test_a_state_without_a_trainers_keys_is_refused_in_one_line(tmp_path):
    """A readable ``state.pt`` that another program wrote (no optimizer, no rows...) is not resumed."""
    from bottleneck_utils.organisms import train

    path = tmp_path / "state.pt"
    torch.save({"step": 3, "model": {}}, path)
    with pytest.raises(train.RunError, match=r"lacks \['ema', 'generator', 'loss', 'optimizer', 'recipe'") as error:
        train._read_state(path, "delete it")
    assert "\n" not in str(error.value)
