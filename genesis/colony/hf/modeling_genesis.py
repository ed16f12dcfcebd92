"""A genesis µLM as a Hugging Face `transformers` causal LM.

Written into every exported bundle beside `configuration_genesis.py` and
`genesis_ulm.py` (a verbatim copy of `genesis.train.ulm`, the network genesis trains), so

    AutoModelForCausalLM.from_pretrained(bundle, trust_remote_code=True)

builds the very network the weights came from, with genesis not installed. Imports torch
and transformers only. The model keeps no key/value cache: its context is a few dozen
tokens, so generation recomputes it at each step (and crops it to the block size).
"""

import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_genesis import GenesisConfig
from .genesis_ulm import GPT, GPTConfig, Rotary


class GenesisPreTrainedModel(PreTrainedModel):
    config_class = GenesisConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_cache_class = False

    def _init_weights(self, module):
        """Only what a checkpoint does not hold: the rotary angle tables (buffers left out
        of saved weights) are computed again; every weight comes from the checkpoint."""
        if isinstance(module, Rotary):
            fresh = Rotary(self.model.config)
            module.cos.copy_(fresh.cos)
            module.sin.copy_(fresh.sin)


class GenesisForCausalLM(GenesisPreTrainedModel, GenerationMixin):
    """The µLM (`genesis_ulm.GPT`, as `self.model`) with transformers' loading, saving,
    loss and generation around it."""

    _tied_weights_keys = {"model.head.weight": "model.tok_emb.weight"}

    def __init__(self, config: GenesisConfig):
        super().__init__(config)
        self.model = GPT(GPTConfig(
            vocab_size=config.vocab_size, block_size=config.n_positions, n_layer=config.n_layer,
            n_head=config.n_head, d_model=config.n_embd, activation=config.activation_function,
            norm=config.normalization, ffn_mult=config.ffn_mult, position=config.position_embedding_type,
            dropout=config.dropout, weight_precision=config.weight_precision,
            qk_norm=config.qk_norm))
        self.post_init()

    def get_input_embeddings(self):
        return self.model.tok_emb

    def set_input_embeddings(self, value):
        self.model.tok_emb = value

    def get_output_embeddings(self):
        return self.model.head

    def set_output_embeddings(self, value):
        self.model.head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **kwargs):
        """Logits for every position; with `labels`, the mean next-token cross-entropy
        (labels are shifted inside, -100 is ignored), as every transformers causal LM.

        The attention is causal only: right padding is harmless (a real token never sees
        a pad after it), left padding is not supported."""
        logits, _ = self.model(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        """The whole context at every step (no cache), cropped to the block size."""
        return {"input_ids": input_ids[:, -self.config.n_positions:]}

    def _supports_default_dynamic_cache(self):
        return False
