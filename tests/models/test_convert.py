"""Checkpoint converters: foreign key names built here, logits equal the model with the same weights."""

import pytest
import torch

from algm_cli.models.convert import detect_format
from algm_cli.models.segformer import Segformer, segformerpp_preset
from algm_cli.models.segmenter import load_checkpoint


def segformer(seed: int) -> Segformer:
    torch.manual_seed(seed)
    model = Segformer("b0", 5, segformerpp_preset("none")).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    return model


def nvlabs_names(state: dict) -> dict:
    """Return our Segformer state dict under NVlabs/SegFormer (mmseg 0.x) names."""
    out = {"decode_head.conv_seg.weight": torch.zeros(5, 256, 1, 1)}  # mmseg's unused classifier
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "encoder":
            s = int(parts[2]) + 1
            rest = ".".join(parts[4:])
            if parts[3] == "patch_embed":
                new = f"backbone.patch_embed{s}.{rest}"
            elif parts[3] == "norm":
                new = f"backbone.norm{s}.{rest}"
            else:  # blocks.{j}.<module>
                j, module = parts[4], ".".join(parts[5:])
                module = (module.replace("attn.sr_norm", "attn.norm")
                          .replace("ffn.dwconv", "mlp.dwconv.dwconv").replace("ffn.fc", "mlp.fc"))
                new = f"backbone.block{s}.{j}.{module}"
        elif parts[1] == "proj":
            new = f"decode_head.linear_c{int(parts[2]) + 1}.proj.{parts[3]}"
        elif parts[1] == "fuse":
            new = f"decode_head.linear_fuse.{'conv' if parts[2] == '0' else 'bn'}.{parts[3]}"
        else:
            new = f"decode_head.linear_pred.{parts[2]}"
        out[new] = value
    return {"meta": {}, "state_dict": out}


HF_MODULES = {"norm1": "layer_norm_1", "norm2": "layer_norm_2", "attn.q": "attention.self.query",
              "attn.sr": "attention.self.sr", "attn.sr_norm": "attention.self.layer_norm",
              "attn.proj": "attention.output.dense", "ffn.fc1": "mlp.dense1",
              "ffn.dwconv": "mlp.dwconv.dwconv", "ffn.fc2": "mlp.dense2"}


def hf_names(state: dict) -> dict:
    """Return our Segformer state dict under transformers' SegformerForSemanticSegmentation names."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "encoder":
            s, kind = parts[2], parts[3]
            if kind == "patch_embed":
                sub = "layer_norm" if parts[4] == "norm" else "proj"
                out[f"segformer.encoder.patch_embeddings.{s}.{sub}.{parts[5]}"] = value
            elif kind == "norm":
                out[f"segformer.encoder.layer_norm.{s}.{parts[4]}"] = value
            else:
                j, module, leaf = parts[4], ".".join(parts[5:-1]), parts[-1]
                prefix = f"segformer.encoder.block.{s}.{j}"
                if module == "attn.kv":
                    k, v = value.chunk(2)
                    out[f"{prefix}.attention.self.key.{leaf}"] = k
                    out[f"{prefix}.attention.self.value.{leaf}"] = v
                else:
                    out[f"{prefix}.{HF_MODULES[module]}.{leaf}"] = value
        elif parts[1] == "proj":
            out[f"decode_head.linear_c.{parts[2]}.proj.{parts[3]}"] = value
        elif parts[1] == "fuse":
            out[f"decode_head.{'linear_fuse' if parts[2] == '0' else 'batch_norm'}.{parts[3]}"] = value
        else:
            out[f"decode_head.classifier.{parts[2]}"] = value
    return out


@pytest.mark.parametrize("fmt, foreign", [("segformer_mmseg", nvlabs_names),
                                          ("segformer_hf", hf_names)])
def test_segformer_checkpoints_convert_to_equal_logits(tmp_path, fmt, foreign):
    source, target = segformer(0), segformer(1)
    path = tmp_path / "released.pth"
    torch.save(foreign(source.state_dict()), path)
    assert load_checkpoint(target, path) == fmt
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source(x), atol=0, rtol=0)


def test_unmatched_keys_are_one_line_and_formats_are_detected(tmp_path):
    state = hf_names(segformer(0).state_dict())
    state.pop("decode_head.classifier.weight")
    state["decode_head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(segformer(1), path)
    message = str(err.value)
    assert "(segformer_hf format) does not fit the model" in message and "\n" not in message
    assert "decode_head.classifier.weight" in message and "decode_head.extra.weight" in message
    assert detect_format({"backbone.layers.0.ln1.weight": 0}) == "mmseg_vit"
    assert detect_format({"encoder.cls_token": 0, "decoder.cls_emb": 0}) == "segmenter"


def setr_released_names(state: dict, stages: int, aux_stages: int) -> dict:
    """Return our SETR (naive / PUP) state dict under fudan-zvg/SETR's mmseg names."""
    out = {"decode_head.conv_seg.weight": torch.zeros(3, 256, 1, 1)}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "encoder":
            out["backbone." + ".".join(parts[1:])] = value
            continue
        head, rest = ("decode_head", parts[1:]) if parts[0] == "head" else \
            (f"auxiliary_head.{parts[1]}", parts[2:])
        count = stages if parts[0] == "head" else aux_stages
        if rest[0] == "norm":
            new = f"{head}.norm.{rest[1]}"
        elif rest[0] == "classifier":
            new = f"{head}.conv_{count}.{rest[1]}"
        elif rest[2] == "0":
            new = f"{head}.conv_{rest[1]}.{rest[3]}"
        else:
            new = f"{head}.syncbn_fc_{rest[1]}.{rest[3]}"
        out[new] = value
    return {"meta": {}, "state_dict": out}


@pytest.mark.parametrize("decoder, stages, aux_stages", [("naive", 1, 1), ("pup", 4, 1)])
def test_released_setr_checkpoints_convert_to_equal_logits(tmp_path, decoder, stages, aux_stages):
    from algm_cli.models.setr import SETR

    torch.manual_seed(0)
    source = SETR("vit_t", 3, decoder, 64).eval()
    with torch.no_grad():
        for name, buf in source.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    target = SETR("vit_t", 3, decoder, 64)
    path = tmp_path / "setr.pth"
    torch.save(setr_released_names(source.state_dict(), stages, aux_stages), path)
    assert load_checkpoint(target, path) == "setr_mmseg"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source(x), atol=0, rtol=0)
        for a, b in zip(target.forward_aux(x), source.forward_aux(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
