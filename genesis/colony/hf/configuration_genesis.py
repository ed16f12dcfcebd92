"""The configuration of a genesis µLM for Hugging Face `transformers`.

Written into every exported bundle (with `modeling_genesis.py` and `genesis_ulm.py`), so
`AutoConfig.from_pretrained(bundle, trust_remote_code=True)` reads config.json without
genesis installed. Imports transformers only.
"""

from transformers import PretrainedConfig


class GenesisConfig(PretrainedConfig):
    """A µLM's architecture, under GPT-2's names where GPT-2 has the trait.

    Args:
        vocab_size: tokens in the tokenizer's vocabulary.
        n_positions: the longest context (the block size the model was trained with).
        n_layer, n_head, n_embd: blocks, attention heads per block, residual width.
        activation_function: relu | gelu | silu | swiglu | relu2.
        normalization: layernorm | rmsnorm.
        ffn_mult: feed-forward width as a multiple of n_embd (`n_inner` is the width built).
        position_embedding_type: learned | rotary.
        dropout: the dropout rate used in training.
        weight_precision: fp32 | ternary (BitNet b1.58 weights in the blocks' matmuls).
        qk_norm: off | on (each head's queries and keys normalized before attention).
    """

    model_type = "genesis-ulm"
    # the names other tools (lm-eval, pipelines) look for, as GPT2Config maps them
    attribute_map = {"max_position_embeddings": "n_positions", "hidden_size": "n_embd",
                     "num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}

    def __init__(self, vocab_size=4096, n_positions=64, n_layer=1, n_head=1, n_embd=64,
                 activation_function="gelu", normalization="layernorm", ffn_mult=4,
                 position_embedding_type="learned", dropout=0.0, weight_precision="fp32",
                 qk_norm="off", tie_word_embeddings=True, **kwargs):
        self.vocab_size, self.n_positions = vocab_size, n_positions
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.activation_function, self.normalization = activation_function, normalization
        self.ffn_mult, self.position_embedding_type = ffn_mult, position_embedding_type
        self.dropout, self.weight_precision, self.qk_norm = dropout, weight_precision, qk_norm
        kwargs.setdefault("use_cache", False)  # the model recomputes its short context each step
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
