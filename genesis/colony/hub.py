"""The Hugging Face side of a bundle: what `transformers`, PEFT and lm-evaluation-harness
need to run it without genesis.

- `config.json` under transformers' conventions (`model_type`, `architectures`,
  `auto_map` to the modeling code in the folder, GPT-2's names where GPT-2 has the trait);
- the modeling code: `genesis_ulm.py` (a verbatim copy of `genesis.train.ulm`, the
  network genesis trains, torch only), `configuration_genesis.py` and
  `modeling_genesis.py` (the thin transformers wrapper in `genesis/colony/hf/`);
- `tokenizer_config.json` and `special_tokens_map.json`, so `AutoTokenizer` loads
  `tokenizer.json` as a fast tokenizer;
- an agent's adapter in PEFT's layout, in the `adapter/` subfolder: `adapter_config.json`
  and `adapter_model.safetensors` under PEFT's tensor names, over the base weights of the
  bundle itself (`PeftModel.from_pretrained(base_model, bundle / "adapter")`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from genesis.train.data import END_OF_TEXT
from genesis.train.model import GPTConfig

NETWORK = "genesis_ulm.py"  # the copy of genesis.train.ulm in a bundle
WRAPPER = ("configuration_genesis.py", "modeling_genesis.py")
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")
CODE = (NETWORK, *WRAPPER)
ADAPTER_FOLDER = "adapter"
PEFT_ADAPTER = f"{ADAPTER_FOLDER}/adapter_model.safetensors"
PEFT_CONFIG = f"{ADAPTER_FOLDER}/adapter_config.json"
_PEFT_PREFIX, _PEFT_PART = "base_model.model.model.", {"a": "lora_A.weight", "b": "lora_B.weight"}


def hf_config(config: GPTConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """config.json's fields for transformers (`GenesisConfig`'s arguments and the
    auto classes of the code in the bundle)."""
    end = tokenizer.token_to_id(END_OF_TEXT)
    return {"architectures": ["GenesisForCausalLM"], "model_type": "genesis-ulm",
            "auto_map": {"AutoConfig": "configuration_genesis.GenesisConfig",
                         "AutoModelForCausalLM": "modeling_genesis.GenesisForCausalLM"},
            "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_layer": config.n_layer,
            "n_head": config.n_head, "n_embd": config.d_model, "ffn_mult": config.ffn_mult,
            "n_inner": config.ffn_hidden, "activation_function": config.activation,
            "normalization": config.norm, "position_embedding_type": config.position,
            "dropout": config.dropout, "weight_precision": config.weight_precision, "qk_norm": config.qk_norm,
            "bos_token_id": end, "eos_token_id": end, "tie_word_embeddings": True, "use_cache": False,
            "torch_dtype": "float32"}


def write_code_and_tokenizer_config(folder: Path, block_size: int) -> list[str]:
    """Write the modeling code and the tokenizer's config into `folder`; returns the
    names written."""
    (folder / NETWORK).write_bytes(resources.files("genesis.train").joinpath("ulm.py").read_bytes())
    for name in WRAPPER:
        (folder / name).write_bytes(resources.files("genesis.colony").joinpath("hf", name).read_bytes())
    special = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}
    (folder / TOKENIZER_FILES[0]).write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
        "clean_up_tokenization_spaces": False, "add_prefix_space": False, **special}, indent=2) + "\n")
    (folder / TOKENIZER_FILES[1]).write_text(json.dumps(special, indent=2) + "\n")
    return [*CODE, *TOKENIZER_FILES]


def to_peft(adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An adapter ("blocks.0.attn.qkv.a") under PEFT's names
    ("base_model.model.model.blocks.0.attn.qkv.lora_A.weight")."""
    return {f"{_PEFT_PREFIX}{name[:-2]}.{_PEFT_PART[name[-1]]}": tensor.contiguous()
            for name, tensor in adapter.items()}


def from_peft(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`to_peft` undone; a name of another form is kept as it is (and then refused by
    the adapter's checks)."""
    back = {}
    for name, tensor in tensors.items():
        layer, _, part = name.removeprefix(_PEFT_PREFIX).rpartition(".lora_")
        back[f"{layer}.{part[0].lower()}" if part in ("A.weight", "B.weight") else name] = tensor
    return back


def peft_config(rank: int, targets: tuple[str, ...], base: Path) -> dict[str, Any]:
    """adapter_config.json: a LoRA of `rank` with scaling 1 (lora_alpha = r, as the colony
    adds B·A·x unscaled), no dropout and no biases, on `targets`, over the model in `base`."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
            "bias": "none", "target_modules": list(targets), "fan_in_fan_out": False,
            "base_model_name_or_path": str(base), "inference_mode": True, "library_name": "genesis"}


GPT2_FOLDER = "gpt2"
GPT2_FILES = (f"{GPT2_FOLDER}/config.json", f"{GPT2_FOLDER}/model.safetensors")
# genesis's layer name -> GPT-2's (its Conv1D layers store weights as (in, out): transposed)
_GPT2_LAYERS = {"ln_1": "ln_1", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "ln_2": "ln_2",
                "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj"}
_GPT2_CONV1D = ("attn.qkv", "attn.proj", "mlp.up", "mlp.down")


def gpt2_obstacle(config: GPTConfig) -> str | None:
    """Why a µLM is not a plain GPT-2 (rotary positions, RMSNorm, a gated feed-forward,
    ternary weights or normalized queries and keys), or None when `GPT2LMHeadModel` computes exactly what it does."""
    if config.position != "learned":
        return f"{config.position} positions"
    if config.norm != "layernorm":
        return config.norm
    if config.activation == "swiglu":
        return "the gated swiglu feed-forward"
    if config.weight_precision != "fp32":
        return f"{config.weight_precision} weights"
    if config.qk_norm == "on":
        return "normalized queries and keys"
    return None


def gpt2_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain µLM's weights (as genesis saves them: the tied head stored once, as the
    token embedding) under `GPT2LMHeadModel`'s names and shapes."""
    renamed = {"transformer.wte.weight": state["tok_emb.weight"], "transformer.wpe.weight": state["pos_emb.weight"],
               "transformer.ln_f.weight": state["ln_f.weight"], "transformer.ln_f.bias": state["ln_f.bias"]}
    for name, tensor in state.items():
        if not name.startswith("blocks."):
            continue
        _, index, rest = name.split(".", 2)
        layer, part = rest.rsplit(".", 1)
        if layer in _GPT2_CONV1D and part == "weight":
            tensor = tensor.t()
        renamed[f"transformer.h.{index}.{_GPT2_LAYERS[layer]}.{part}"] = tensor.contiguous()
    return renamed


def gpt2_config(config: GPTConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """`GPT2Config`'s fields for a plain µLM (`gpt2_obstacle` is None)."""
    end = tokenizer.token_to_id(END_OF_TEXT)
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
            "n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.d_model,
            "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.ffn_hidden,
            "activation_function": config.activation, "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout, "attn_pdrop": config.dropout, "layer_norm_epsilon": 1e-5,
            "scale_attn_weights": True, "bos_token_id": end, "eos_token_id": end,
            "tie_word_embeddings": True, "torch_dtype": "float32"}
