"""ImageNet-1k MiT weights for Segformer: NVlabs and Hugging Face files, the hub's offline error."""

import re

import huggingface_hub
import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import save_file

from algm_cli.engine.protocol import protocol_columns
from algm_cli.engine.setup import ConfigError, build_model
from algm_cli.models.mit_weights import encoder_state, load_mit_weights
from algm_cli.models.pretrained import describe
from algm_cli.models.schedule import NO_MERGE
from algm_cli.models.segformer import Segformer


def cfg(*overrides):
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        return compose("run", list(overrides))


def random_encoder(seed: int, variant: str = "b0") -> dict:
    """Return the encoder state dict of a Segformer with every tensor randomised (norms too)."""
    torch.manual_seed(seed)
    state = Segformer(variant, 3).encoder.state_dict()
    return {k: torch.randn_like(v) for k, v in state.items()}


# our encoder names -> the released classifiers' names, written independently of convert.py
NVLABS = [(r"^stages\.(\d)\.patch_embed\.", lambda m: f"patch_embed{int(m[1]) + 1}."),
          (r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m[1]) + 1}."),
          (r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m[1]) + 1}."),
          (r"\.attn\.sr_norm\.", ".attn.norm."), (r"\.ffn\.dwconv\.", ".mlp.dwconv.dwconv."),
          (r"\.ffn\.", ".mlp.")]
HF = [(r"^stages\.(\d)\.patch_embed\.norm\.", r"patch_embeddings.\1.layer_norm."),
      (r"^stages\.(\d)\.patch_embed\.", r"patch_embeddings.\1."),
      (r"^stages\.(\d)\.blocks\.", r"block.\1."), (r"^stages\.(\d)\.norm\.", r"layer_norm.\1."),
      (r"\.norm(\d)\.", r".layer_norm_\1."), (r"\.attn\.q\.", ".attention.self.query."),
      (r"\.attn\.sr_norm\.", ".attention.self.layer_norm."),
      (r"\.attn\.sr\.", ".attention.self.sr."),
      (r"\.attn\.proj\.", ".attention.output.dense."), (r"\.ffn\.fc(\d)\.", r".mlp.dense\1."),
      (r"\.ffn\.dwconv\.", ".mlp.dwconv.dwconv."), (r"^", "segformer.encoder.")]


def renamed(key: str, rules: list) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def released(state: dict, fmt: str) -> dict:
    """Return `state` (our encoder names) as NVlabs' mit_b*.pth or HF nvidia/mit-b* holds it."""
    out = {}
    for key, value in state.items():
        if fmt == "hf" and ".attn.kv." in key:  # transformers keeps key and value apart
            for part, tensor in zip(("key", "value"), value.chunk(2)):
                out[renamed(key, HF).replace(".attn.kv.", f".attention.self.{part}.")] = tensor
        else:
            out[renamed(key, HF if fmt == "hf" else NVLABS)] = value
    head = "classifier" if fmt == "hf" else "head"
    out.update({f"{head}.weight": torch.randn(1000, 256), f"{head}.bias": torch.randn(1000)})
    return {k: v.contiguous() for k, v in out.items()}


@pytest.mark.parametrize("fmt, suffix", [("nvlabs", ".pth"), ("hf", ".safetensors")])
def test_released_mit_weights_load_into_the_encoder(tmp_path, fmt, suffix):
    source = random_encoder(1)
    file_state = released(source, fmt)
    path = tmp_path / f"mit_b0{suffix}"
    save_file(file_state, path) if suffix == ".safetensors" else torch.save(file_state, path)
    assert encoder_state(file_state)[1] == fmt
    torch.manual_seed(2)
    model = Segformer("b0", 3, pretrained=str(path)).eval()
    for key, value in source.items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value, rtol=0, atol=0)
    reference = Segformer("b0", 3).eval()
    reference.encoder.load_state_dict(source)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.encoder(images, model.merge)[0]
        expected = reference.encoder(images, reference.merge)[0]
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_model_pretrained_path_goes_through_the_config(tmp_path):
    source = random_encoder(3)
    path = tmp_path / "mit_b0.pth"
    torch.save({"state_dict": released(source, "nvlabs")}, path)
    run = cfg("model=segformer", "dataset=ade20k", f"model.pretrained={path}", "merge=none")
    assert run.model.pretrained == str(path)
    model = build_model(run, NO_MERGE)
    torch.testing.assert_close(model.encoder.stages[2].blocks[1].attn.kv.weight,
                               source["stages.2.blocks.1.attn.kv.weight"], rtol=0, atol=0)
    assert protocol_columns(run, {})["weights"] == f"file:{path.resolve()}"


def test_weights_that_do_not_fit_get_one_line(tmp_path):
    b1 = tmp_path / "mit_b1.pth"
    torch.save(released(random_encoder(4, "b1"), "nvlabs"), b1)
    with pytest.raises(ValueError, match=r"mit_b1.pth \(nvlabs format\) does not fit the mit_b0 "
                                         r"encoder: shape mismatches") as err:
        Segformer("b0", 3, pretrained=str(b1))
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.pth"
    state = released(random_encoder(4), "hf")
    state["segformer.encoder.extra.weight"] = torch.ones(1)
    del state["segformer.encoder.layer_norm.3.bias"]
    torch.save(state, junk)
    with pytest.raises(ConfigError, match=r"missing keys \['stages.3.norm.bias'\] \(1\), "
                                          r"unexpected keys \['segformer.encoder.extra.weight'\]"):
        build_model(cfg("model=segformer", f"model.pretrained={junk}"), NO_MERGE)


def test_hub_weights_offline_give_one_line_naming_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError) as err:
        load_mit_weights(Segformer("b0", 3).encoder, True, "b2")
    message = str(err.value)
    assert message.startswith("model.pretrained=true needs the ImageNet-1k MiT weights "
                              "nvidia/mit-b2 (not in the Hugging Face cache")
    assert "hf_hub_download('nvidia/mit-b2'" in message and "model.pretrained=PATH" in message
    assert "mit_b2.pth" in message and "\n" not in message
    with pytest.raises(ConfigError, match="model config: model.pretrained=true needs .* "
                                          "nvidia/mit-b0"):
        build_model(cfg("model=segformer", "dataset=ade20k"), NO_MERGE)


def test_hub_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "0" * 40  # the cache layout: refs/main names the snapshot holding the files
    repo = tmp_path / "models--nvidia--mit-b0"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    source = random_encoder(6)
    torch.save(released(source, "hf"), repo / "snapshots" / commit / "pytorch_model.bin")
    model = Segformer("b0", 3, pretrained=True)
    torch.testing.assert_close(model.encoder.stages[3].norm.weight, source["stages.3.norm.weight"],
                               rtol=0, atol=0)


def test_the_protocol_picks_the_weights_and_rows_name_them():
    paper = cfg("model=segformer", "dataset=ade20k", "backbone=mit_b3")
    assert paper.model.pretrained is True
    assert protocol_columns(paper, {})["weights"] == "hf:nvidia/mit-b3"
    assert describe(True, "vit_s") == "timm" and describe(False, "mit_b0") == "none"
    assert cfg("model=segformer", "dataset=ade20k", "protocol=quick").model.pretrained is False
    assert cfg("model=segformer").model.pretrained is False  # synthetic: quick
    assert cfg("model=segformer", "dataset=ade20k", "smoke=true").model.pretrained is True
    with initialize_config_module("algm_cli.conf", version_base="1.3"):
        flops = compose("flops", ["model=segformer", "dataset=ade20k"])
    assert flops.model.pretrained is False
