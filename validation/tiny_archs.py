"""The 18 architectures of the seeds' matrix (and BART, a second encoder-decoder), shrunk: one
transformers config per architecture (the same ``model_type`` and head class as the seed model,
layers and widths cut down) and the pre-processing files the architecture needs (tokenizer.json,
preprocessor_config.json; the LLMs' SentencePiece tokenizer.model, which llama.cpp's GGUF
converter reads).

``ARCHS[name]`` is a JSON-able spec; :func:`build` turns it into a random-weight model saved as
SafeTensors. The spec is what the cache key hashes, so changing a number here rebuilds the model.
torch and transformers are imported inside the functions: importing this module is cheap.
"""
from __future__ import annotations

from pathlib import Path

# Common shrunken widths: big enough for every attention layout (heads divide hidden, GQA groups
# divide heads), small enough that 18 models build and convert in a few minutes on 2 cores.
_TXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 128}
_LLM = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 512}
_IMG = 32  # pixels a side

# name -> {config: class name + kwargs, head: model class, tokenizer: wordpiece|bpe|None,
#          processor: image-processor class + kwargs | None, chat_template: for LLMs}
ARCHS: dict[str, dict] = {
    "bert": {"config": ["BertConfig", dict(_TXT)], "head": "BertForMaskedLM", "tokenizer": "wordpiece"},
    "gpt2": {"config": ["GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128}],
             "head": "GPT2LMHeadModel", "tokenizer": "bpe"},
    "roberta": {"config": ["RobertaConfig", {**_TXT, "max_position_embeddings": 130, "pad_token_id": 1,
                                             "bos_token_id": 0, "eos_token_id": 2}],
                "head": "RobertaForMaskedLM", "tokenizer": "wordpiece"},
    # T5 v1.1's gated-GELU feed-forward, wider and at a larger initialisation than T5's default: a
    # random T5 this small otherwise repeats one token from the second step on (greedy), which would
    # make the token-for-token comparison with transformers say little
    "t5": {"config": ["T5Config", {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2,
                                   "num_heads": 4, "decoder_start_token_id": 0, "pad_token_id": 0,
                                   "feed_forward_proj": "gated-gelu", "initializer_factor": 3.0}],
           "head": "T5ForConditionalGeneration", "tokenizer": "wordpiece"},
    # not one of the seeds' 18: the second encoder-decoder of the offline suite (issue 16); BART's
    # byte-level BPE with RoBERTa's special tokens, forced_bos_token_id as bart-large has it
    "bart": {"config": ["BartConfig", {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
                                       "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                                       "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 128,
                                       "init_std": 1.0, "forced_bos_token_id": 0}],
             "head": "BartForConditionalGeneration", "tokenizer": "bart"},
    "distilbert": {"config": ["DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
                                                   "max_position_embeddings": 128}],
                   "head": "DistilBertForMaskedLM", "tokenizer": "wordpiece"},
    "albert": {"config": ["AlbertConfig", {**_TXT, "embedding_size": 16}], "head": "AlbertForMaskedLM",
               "tokenizer": "wordpiece"},
    "resnet": {"config": ["ResNetConfig", {"embedding_size": 8, "hidden_sizes": [8, 16, 16, 32],
                                           "depths": [1, 1, 1, 1], "layer_type": "bottleneck", "num_labels": 10}],
               "head": "ResNetForImageClassification",
               "processor": ["ConvNextImageProcessor", {"size": {"shortest_edge": _IMG}, "crop_pct": 1.0}]},
    "vit": {"config": ["ViTConfig", {**_TXT, "image_size": _IMG, "patch_size": 8, "num_labels": 10}],
            "head": "ViTForImageClassification",
            "processor": ["ViTImageProcessor", {"size": {"height": _IMG, "width": _IMG}}]},
    "convnext": {"config": ["ConvNextConfig", {"hidden_sizes": [8, 16, 16, 32], "depths": [1, 1, 1, 1],
                                               "num_labels": 10}],
                 "head": "ConvNextForImageClassification",
                 "processor": ["ConvNextImageProcessor", {"size": {"shortest_edge": _IMG}, "crop_pct": 1.0}]},
    # MobileNetV2 and EfficientNet at transformers' initializer_range (0.02) shrink the signal to
    # exactly zero through their many narrow layers (measured: max |logit| 1e-26 and 0.0), which
    # would make the parity check vacuous; these ranges give logits of order 75 and 0.2.
    "mobilenet": {"config": ["MobileNetV2Config", {"image_size": _IMG, "depth_multiplier": 0.25, "num_labels": 10,
                                                   "initializer_range": 0.3}],
                  "head": "MobileNetV2ForImageClassification",
                  "processor": ["MobileNetV2ImageProcessor", {"size": {"shortest_edge": _IMG},
                                                              "crop_size": {"height": _IMG, "width": _IMG}}]},
    "deit": {"config": ["DeiTConfig", {**_TXT, "image_size": _IMG, "patch_size": 8, "num_labels": 10}],
             "head": "DeiTForImageClassification",
             "processor": ["DeiTImageProcessor", {"size": {"height": _IMG, "width": _IMG},
                                                  "crop_size": {"height": _IMG, "width": _IMG}}]},
    "efficientnet": {"config": ["EfficientNetConfig", {"image_size": _IMG, "width_coefficient": 0.25,
                                                       "depth_coefficient": 0.25, "hidden_dim": 320,
                                                       "num_labels": 10, "initializer_range": 0.6}],
                     "head": "EfficientNetForImageClassification",
                     "processor": ["EfficientNetImageProcessor", {"size": {"height": _IMG, "width": _IMG}}]},
    "clip": {"config": ["CLIPConfig", {"projection_dim": 16,
                                       "text_config": {**_TXT, "max_position_embeddings": 64},
                                       "vision_config": {**_TXT, "image_size": _IMG, "patch_size": 8}}],
             "head": "CLIPModel", "tokenizer": "wordpiece",
             "processor": ["CLIPImageProcessor", {"size": {"shortest_edge": _IMG},
                                                  "crop_size": {"height": _IMG, "width": _IMG}}]},
    "wav2vec2": {"config": ["Wav2Vec2Config", {**_TXT, "conv_dim": [16, 16], "conv_stride": [5, 4],
                                               "conv_kernel": [10, 4], "num_conv_pos_embeddings": 16,
                                               "num_conv_pos_embedding_groups": 4, "vocab_size": 32,
                                               "do_stable_layer_norm": True, "feat_extract_norm": "layer"}],
                 "head": "Wav2Vec2ForCTC",
                 "processor": ["Wav2Vec2FeatureExtractor", {"sampling_rate": 16000, "return_attention_mask": True}]},
    "tinyllama": {"config": ["LlamaConfig", dict(_LLM)], "head": "LlamaForCausalLM", "tokenizer": "spm",
                  "chat_template": "zephyr"},
    "llama-3.2-1b": {"config": ["LlamaConfig", {**_LLM, "tie_word_embeddings": True, "rope_theta": 500000.0,
                                                "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
                                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                 "original_max_position_embeddings": 64}}],
                     "head": "LlamaForCausalLM", "tokenizer": "spm", "chat_template": "llama3"},
    "qwen2": {"config": ["Qwen2Config", {**_LLM, "tie_word_embeddings": True}], "head": "Qwen2ForCausalLM",
              "tokenizer": "spm", "chat_template": "chatml"},
    "deepseek-coder": {"config": ["LlamaConfig", {**_LLM, "rope_scaling": {"type": "linear", "factor": 4.0}}],
                       "head": "LlamaForCausalLM", "tokenizer": "spm", "chat_template": "deepseek"},
}

# The chat templates of the seed models, in their shape (role tags), so a multi-turn request is
# formatted as the real model would see it.
CHAT_TEMPLATES = {
    "zephyr": ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
    "llama3": ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "chatml": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "deepseek": ("{% for m in messages %}{% if m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n"
                 "{% else %}### Response:\n{{ m['content'] }}\n<|EOT|>\n{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}### Response:\n{% endif %}"),
}


def _tokenizer(kind: str, chat_template: str | None):
    from .tiny_tokenizers import bart_tokenizer, bpe_tokenizer, spm_tokenizer, wordpiece_tokenizer

    tok = {"wordpiece": wordpiece_tokenizer, "bpe": bpe_tokenizer, "bart": bart_tokenizer,
           "spm": spm_tokenizer}[kind]()
    tok.model_max_length = 128
    if chat_template:
        tok.chat_template = CHAT_TEMPLATES[chat_template]
    return tok


def build(name: str, dest: Path, seed: int) -> None:
    """Write the tiny ``name`` model into ``dest``: config.json, model.safetensors, and its
    tokenizer / pre-processor files. Same spec and seed -> same weights."""
    import torch
    import transformers as tf

    spec = ARCHS[name]
    tok = _tokenizer(spec["tokenizer"], spec.get("chat_template")) if spec.get("tokenizer") else None
    cls_name, kwargs = spec["config"]
    kwargs = dict(kwargs)
    if tok is not None and cls_name != "CLIPConfig":
        kwargs["vocab_size"] = len(tok)
        if spec["tokenizer"] == "bpe":  # the BPE's one special token ends generation
            kwargs.update(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        elif spec["tokenizer"] == "spm":   # <s> and </s> of the SentencePiece vocabulary
            kwargs.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if cls_name == "CLIPConfig":
        kwargs["text_config"] = {**kwargs["text_config"], "vocab_size": len(tok),
                                 "pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id,
                                 "eos_token_id": tok.sep_token_id}
    config = getattr(tf, cls_name)(**kwargs)
    config.architectures = [spec["head"]]
    torch.manual_seed(seed)
    model = getattr(tf, spec["head"])(config).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    if tok is not None:
        tok.save_pretrained(dest)
    if spec.get("processor"):
        proc_name, proc_kwargs = spec["processor"]
        getattr(tf, proc_name)(**proc_kwargs).save_pretrained(dest)
    (dest / "README.md").write_text(
        f"---\nlibrary_name: transformers\ntags:\n- tiny\n- random-weights\n---\n# tiny-{name}\n\n"
        f"Random weights (seed {seed}), the {spec['head']} architecture shrunk, for the validator only.\n")
