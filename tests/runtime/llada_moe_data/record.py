"""Build the tiny LLaDA-MoE checkpoints and record the published model + LLaDA's generate on them.

Run once, from /tmp/lladamoe_ref (a scratch copy outside the repository), with transformers
4.46.2 first on the path:
    PYTHONPATH=/tmp/lladamoe_ref/tf4:/tmp/lladamoe_ref python record.py
"""

import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, "/tmp/lladamoe_ref")
import llada_generate
from lladamoe.configuration_lladamoe import LLaDAMoEConfig
from lladamoe.modeling_lladamoe import LLaDAMoEModelLM

OUT = Path("/tmp/lladamoe_ref/out")
if OUT.exists():
    shutil.rmtree(OUT)
OUT.mkdir(parents=True)

AUTO_MAP = {
    "AutoConfig": "configuration_lladamoe.LLaDAMoEConfig",
    "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM",
    "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM",
}
BASE = {
    "architectures": ["LLaDAMoEModelLM"],
    "auto_map": AUTO_MAP,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "clip_qkv": None,
    "dense_intermediate_size": 64,
    "eos_token_id": 248,
    "expert_intermediate_size": 16,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "max_position_embeddings": 8192,
    "model_type": "llada",  # what the published checkpoints say
    "moe_layer_freq": [1, 1],
    "moe_router_enable_expert_bias": False,
    "moe_router_score_function": "softmax",
    "norm_topk_prob": True,  # the published forward ignores it (hard-coded False)
    "num_attention_heads": 4,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "output_router_logits": False,
    "pad_token_id": 248,
    "partial_rotary_factor": 1,
    "qk_layernorm": True,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 50000,
    "routed_scaling_factor": 1,
    "router_aux_loss_coef": 0.01,
    "router_num_group": None,
    "router_topk_group": None,
    "shared_expert_intermediate_size": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "use_cache": False,
    "vocab_size": 256,
}
VARIANT = {
    **BASE,
    "attention_bias": True,
    "clip_qkv": 2.0,
    "moe_layer_freq": [0, 1],
    "moe_router_enable_expert_bias": True,
    "partial_rotary_factor": 0.5,
    "qk_layernorm": False,
    "shared_expert_intermediate_size": 24,
    "tie_word_embeddings": True,
}
MASK = 249
SKIP = ("architectures", "auto_map", "model_type", "torch_dtype")


def write_checkpoint(root: Path, config: dict, seed: int) -> None:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    cfg = LLaDAMoEConfig(**{k: v for k, v in config.items() if k not in SKIP})
    skeleton = LLaDAMoEModelLM(cfg)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, p in skeleton.state_dict().items():
        if config["tie_word_embeddings"] and name == "lm_head.weight":
            continue
        r = torch.randn(p.shape, generator=g)
        if "norm" in name:
            t = 1 + 0.1 * r
        elif name.endswith("expert_bias"):
            t = 0.05 * r
        elif "embed_tokens" in name or "lm_head" in name:
            t = 0.5 * r
        elif name.endswith("mlp.gate.weight"):
            t = 1.0 * r
        else:
            t = 0.3 * r
        tensors[name] = t.contiguous()
    # The mask token is never a prediction of the real model; a zero output row keeps the
    # random one from predicting it (LLaDA's generate would leave such a position masked).
    # (Tied: the embedding row, which also makes the mask's input embedding zero.)
    head = "model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"
    tensors[head][MASK] = 0.0
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})


write_checkpoint(OUT / "checkpoint", BASE, 20261206)
write_checkpoint(OUT / "checkpoint_variant", VARIANT, 20261207)

# Tokenizer: a small BPE for the ordinary ids, then the family's control tokens after it, as
# the published vocabulary has them at its end (<|endoftext|> ends, <|mask|> masks,
# <|role_end|> ends a turn, <role>/</role> frame the role names).
tok = Tokenizer(models.BPE(unk_token=None))
tok.pre_tokenizer = pre_tokenizers.Metaspace()
tok.decoder = decoders.Metaspace()
text = [
    "Hello world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Where is my order? It shipped on Monday.",
    "Thank you, have a nice day.",
    "SYSTEM You are a helpful assistant.",
    "HUMAN Where is my order?",
    "ASSISTANT It shipped on Monday.",
] * 10
tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=248, show_progress=False))
assert tok.get_vocab_size() <= 248, tok.get_vocab_size()
while tok.get_vocab_size() < 248:  # pad the ordinary range so the specials land at 248..
    tok.add_tokens([f"<|reserved_{tok.get_vocab_size()}|>"])
specials = ["<|endoftext|>", "<|mask|>", "<|role_end|>", "<role>", "</role>"]
tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
assert tok.token_to_id("<|endoftext|>") == 248 and tok.token_to_id("<|mask|>") == MASK
TEMPLATE = (
    "{% for message in messages %}<role>{{ message['role'] | upper }}</role>"
    "{{ message['content'] }}<|role_end|>{% endfor %}"
    "{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}"
)
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<|endoftext|>",
    "eos_token": "<|role_end|>",
    "pad_token": "<|endoftext|>",
    "mask_token": "<|mask|>",
    "model_max_length": 8192,
    "clean_up_tokenization_spaces": False,
    "chat_template": TEMPLATE,
}
for name in ("checkpoint", "checkpoint_variant"):
    tok.save(str(OUT / name / "tokenizer.json"))
    (OUT / name / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")


def load(root: Path, dtype: str) -> LLaDAMoEModelLM:
    # As the model card: from_pretrained(..., torch_dtype=...) (bfloat16 there).
    m = LLaDAMoEModelLM.from_pretrained(str(root), torch_dtype=getattr(torch, dtype))
    return m.eval()


prompt = [[250, 251, 40, 63, 88, 120, 252, 250]]
batch = [[250, 251, 41, 70, 99, 252, 250, 19], [250, 251, 131, 7, 200, 252, 250, 19]]
forward_input = [[250, 251, 40, 63, 88, 120, 252, 250, 249, 249, 249, 249, 17, 249, 249, 249]]

expected: dict = {"prompt": prompt, "batch": batch, "forward_input": forward_input}
for name in ("checkpoint", "checkpoint_variant"):
    models_ = {d: load(OUT / name, d) for d in ("float32", "bfloat16")}
    attn = {d: type(m.model.layers[0].self_attn).__name__ for d, m in models_.items()}
    print(name, attn)
    entry: dict = {"attention_class": attn, "forward_logits_first_columns": {}, "cases": []}
    for d, m in models_.items():
        with torch.no_grad():
            logits = m(torch.tensor(forward_input)).logits
        entry["forward_logits_first_columns"][d] = logits[0, :, :8].float().tolist()

    def run(dtype: str, ids: list, seed: int = 0, *, models_=models_, entry=entry, name=name, **kw):
        torch.manual_seed(seed)
        out = llada_generate.generate(models_[dtype], torch.tensor(ids), mask_id=MASK, **kw)
        case = {"dtype": dtype, "prompt": ids, "seed": seed, "kwargs": kw, "output": out.tolist()}
        entry["cases"].append(case)
        print(name, dtype, kw, len(ids), "->", [r[len(ids[0]) :] for r in out.tolist()])

    for dtype in ("float32", "bfloat16"):
        if name == "checkpoint_variant":
            run(dtype, prompt, steps=8, gen_length=16, block_length=8)
            continue
        for ids in (prompt, batch):
            run(dtype, ids, steps=8, gen_length=16, block_length=8)
            run(dtype, ids, steps=16, gen_length=16, block_length=16)
            run(dtype, ids, seed=3, steps=8, gen_length=16, block_length=4, temperature=0.8)
            run(dtype, ids, seed=5, steps=8, gen_length=16, block_length=8, remasking="random")
        run(dtype, prompt, steps=8, gen_length=16, block_length=8, cfg_scale=1.0)
    expected[name] = entry

expected["provenance"] = {
    "what": "token ids of LLaDA's generate() over the published LLaDA-MoE model "
    "(LLaDAMoEModelLM) on the tiny random checkpoints checkpoint/ and checkpoint_variant/; "
    "forward_logits_first_columns: the model's logits on forward_input, first 8 columns; "
    "torch.manual_seed(seed) before each call",
    "upstream_files": "modeling_lladamoe.py and configuration_lladamoe.py of "
    "inclusionAI/LLaDA-MoE-7B-A1B (HF remote code), as copied in github.com/ZHZisZZ/dllm "
    "dllm/pipelines/llada/models/ (snapshot of the tqa24/dllm fork, commit ca17675), unchanged",
    "sampler": "ML-GSAI/LLaDA generate.py as transcribed in dlm_runtime/llada_generate.py "
    "(the LLaDA-MoE model card's generate() is LLaDA's); confidence softmax in the logits' dtype",
    "load": "LLaDAMoEModelLM.from_pretrained(path, torch_dtype=dtype), as the model card",
    "run_with": f"transformers {transformers.__version__}, torch {torch.__version__} CPU, "
    "sdpa attention (the class's default)",
    "checkpoint": "weights: torch.randn with torch.Generator().manual_seed(20261206) "
    "(variant: 20261207) in state_dict order; norms 1+0.1*r, embed_tokens and lm_head 0.5*r, "
    "router gates 1.0*r, expert_bias 0.05*r, others 0.3*r; the output row of the mask id "
    "(249) zeroed (lm_head in checkpoint/, the tied embedding in checkpoint_variant/)",
}
(OUT / "expected.json").write_text(json.dumps(expected) + "\n")
print("done")
