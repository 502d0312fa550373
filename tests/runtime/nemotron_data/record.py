"""Build the tiny Nemotron-Labs-Diffusion checkpoint and record the upstream samplers on it."""

import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, "/tmp/nemotron_ref")
from nld.configuration_nemotron_labs_diffusion import NemotronLabsDiffusionConfig
from nld.modeling_nemotron_labs_diffusion import NemotronLabsDiffusionModel

BOOST = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
OUT = Path("/tmp/nemotron_ref/out")
CKPT = OUT / "checkpoint"
if CKPT.exists():
    shutil.rmtree(CKPT)
CKPT.mkdir(parents=True)

ROPE = {
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "factor": 16.0,
    "llama_4_scaling_beta": 0.1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 16384,
    "rope_theta": 1000000.0,
    "rope_type": "yarn",
}
config = {
    "ar_loss_weight": 1.0,
    "architectures": ["NemotronLabsDiffusionModel"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_implementation": "sdpa",
    "auto_map": {
        "AutoConfig": "configuration_nemotron_labs_diffusion.NemotronLabsDiffusionConfig",
        "AutoModel": "modeling_nemotron_labs_diffusion.NemotronLabsDiffusionModel",
    },
    "block_size": 32,
    "bos_token_id": 1,
    "dlm_loss_weight": None,
    "dlm_paradigm": "bidirectional",
    "dp_varying_mask_ratio": False,
    "eos_token_id": 11,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "mask_token_id": 100,
    "max_position_embeddings": 262144,
    "mlp_bias": False,
    "model_type": "nemotron_labs_diffusion",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-05,
    "rope_parameters": ROPE,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "transformers_version": "5.0.0",
    "use_cache": False,
    "vocab_size": 256,
}
(CKPT / "config.json").write_text(json.dumps(config, indent=2) + "\n")

# Weights in the family's names, from the reference class's own state_dict order.
cfg = NemotronLabsDiffusionConfig(
    **{
        k: v
        for k, v in config.items()
        if k
        not in ("architectures", "auto_map", "model_type", "torch_dtype", "transformers_version")
    }
)
skeleton = NemotronLabsDiffusionModel(cfg)
g = torch.Generator().manual_seed(20261206)
tensors = {}
for name, p in skeleton.state_dict().items():
    r = torch.randn(p.shape, generator=g)
    if "norm" in name:
        t = 1 + 0.1 * r
    elif "embed_tokens" in name or "diffusion_head" in name:
        t = 0.5 * r
    else:
        t = 0.3 * r
    tensors[name] = t.contiguous()
# Make draft and verifier agree sometimes (a random model's never do): the head favours token 166
# after the mask token and after itself, so self-speculation accepts runs of several tokens.
head, emb = tensors["diffusion_head.weight"], tensors["encoder.embed_tokens.weight"]
head[166] += BOOST * (emb[100] + emb[166])
save_file(tensors, str(CKPT / "model.safetensors"), metadata={"format": "pt"})

# Tokenizer: the family's layout (tekken-style control ids 0..100 first; 11 ends a turn,
# 100 is the mask), a small BPE over a few sentences for the rest.
specials = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "<|im_start|>",
    "<|im_end|>",
]
specials += [f"<SPECIAL_{i}>" for i in range(len(specials), 101)]
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Metaspace()
tok.decoder = decoders.Metaspace()
text = [
    "Hello world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Where is my order? It shipped on Monday.",
    "Thank you, have a nice day.",
    "user\nWhere is my order?\n",
    "assistant\nIt shipped on Monday.\n",
    "system\nYou are a helpful assistant.\n",
] * 10
tok.train_from_iterator(
    text, trainers.BpeTrainer(vocab_size=256, special_tokens=specials, show_progress=False)
)
assert tok.token_to_id("<|im_end|>") == 11 and tok.token_to_id("<SPECIAL_100>") == 100
assert tok.get_vocab_size() <= 256, tok.get_vocab_size()
tok.save(str(CKPT / "tokenizer.json"))
(CKPT / "tokenizer_config.json").write_text(
    json.dumps(
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>",
            "eos_token": "<|im_end|>",
            "unk_token": "<unk>",
            "pad_token": "<SPECIAL_12>",
            "mask_token": "<SPECIAL_100>",
            "model_max_length": 262144,
            "clean_up_tokenization_spaces": False,
        },
        indent=2,
    )
    + "\n"
)
(CKPT / "chat_template.jinja").write_text(
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

prompt = [[1, 10, 120, 133, 147, 160, 11, 10, 171]]
batch = [[1, 10, 140, 151, 11, 10, 177], [1, 10, 129, 200, 11, 10, 177]]


def load(dtype):
    m = NemotronLabsDiffusionModel.from_pretrained(str(CKPT), dtype=torch.float32)
    if dtype == "bfloat16":
        m = m.to(torch.bfloat16)  # the model card: from_pretrained, then .to(torch.bfloat16)
    return m.eval()


models_ = {d: load(d) for d in ("float32", "bfloat16")}
provenance = {
    "what": "(ids, nfe) of the published samplers ar_generate, generate and linear_spec_generate "
    "run on the tiny random checkpoint checkpoint/; torch.manual_seed(seed) before each call",
    "upstream_files": "modeling_nemotron_labs_diffusion.py and "
    "configuration_nemotron_labs_diffusion.py of nvidia/Nemotron-Labs-Diffusion-{3B,8B,14B} "
    "(HF remote code, NemotronLabsDiffusionModel), "
    "as indexed from public GitHub copies; samplers transcribed unchanged into a scratch copy",
    "backbone": "the checkpoint's modeling_ministral.py was not reachable: "
    "standin_modeling_ministral.py (transformers' own Ministral3 pieces plus the remote "
    "attention's documented diffusion_lm / "
    "use_cache switch) took its place; see README.md",
    "load": "from_pretrained(path, dtype=float32); bfloat16 then .to(torch.bfloat16), as the "
    "model card",
    "run_with": f"transformers {transformers.__version__}, torch {torch.__version__} CPU",
    "checkpoint": "weights: torch.randn with torch.Generator().manual_seed(20261206) in "
    "state_dict order; norms 1+0.1*r, embed_tokens and diffusion_head 0.5*r, others 0.3*r; "
    "diffusion_head[166] += "
    "embed[100] + embed[166]",
    "inv_freq_dtype": {d: str(m.encoder.rotary_emb.inv_freq.dtype) for d, m in models_.items()},
}
print(provenance)

cases = []


def run(method, dtype, ids, seed=0, **kw):
    m = models_[dtype]
    torch.manual_seed(seed)
    out, nfe = getattr(m, method)(torch.tensor(ids), **kw)
    case = {
        "method": method,
        "dtype": dtype,
        "prompt": ids,
        "seed": seed,
        "kwargs": kw,
        "output": out.tolist(),
        "nfe": int(nfe),
    }
    cases.append(case)
    print(method, dtype, kw, len(ids), "->", [r[len(ids[0]) :] for r in out.tolist()], nfe)
    return case


for dtype in ("float32", "bfloat16"):
    for ids in (prompt, batch):
        run("ar_generate", dtype, ids, max_new_tokens=12)
        run("ar_generate", dtype, ids, max_new_tokens=12, eos_token_id=None)
        for bl, th in ((4, 0.9), (4, 0.3), (8, None), (4, None)):
            run("generate", dtype, ids, max_new_tokens=16, block_length=bl, threshold=th)
        run(
            "generate",
            dtype,
            ids,
            max_new_tokens=8,
            block_length=4,
            threshold=0.5,
            causal_context=False,
        )
        # an end token the model writes early, to exercise each sampler's stopping rule
        run("ar_generate", dtype, ids, max_new_tokens=12, eos_token_id=166)
        run(
            "generate",
            dtype,
            ids,
            max_new_tokens=16,
            block_length=4,
            threshold=0.9,
            eos_token_id=166,
        )
        run(
            "generate",
            dtype,
            ids,
            max_new_tokens=16,
            block_length=8,
            threshold=0.3,
            eos_token_id=18,
        )
    for bl, th in ((4, 0.0), (6, 0.0), (4, 0.3)):
        run("linear_spec_generate", dtype, prompt, max_new_tokens=16, block_length=bl, threshold=th)
    run("linear_spec_generate", dtype, prompt, max_new_tokens=16, block_length=4, eos_token_id=36)
    run("linear_spec_generate", dtype, prompt, max_new_tokens=16, block_length=4, eos_token_id=182)
    # sampling: the same calls under torch.manual_seed(seed)
    run("ar_generate", dtype, prompt, seed=7, max_new_tokens=10, temperature=0.8)
    run(
        "generate",
        dtype,
        prompt,
        seed=7,
        max_new_tokens=8,
        block_length=4,
        threshold=0.5,
        temperature=0.8,
    )
    run(
        "linear_spec_generate",
        dtype,
        prompt,
        seed=7,
        max_new_tokens=12,
        block_length=4,
        temperature=0.8,
    )

# Raw logits of one full causal and one bidirectional forward, for checking the model itself.
m = models_["float32"]
ids = torch.tensor(prompt)
with torch.no_grad():
    for layer in m.encoder.layers:
        layer.self_attn.diffusion_lm = False
    causal = m(ids, use_cache=True, use_causal_mask=True).logits[0, :, :8]
    for layer in m.encoder.layers:
        layer.self_attn.diffusion_lm = True
    bidir = m(ids, use_cache=False).logits[0, :, :8]
(OUT / "expected.json").write_text(
    json.dumps(
        {
            "provenance": provenance,
            "cases": cases,
            "forward_input": prompt,
            "causal_logits_first_columns": causal.tolist(),
            "bidirectional_logits_first_columns": bidir.tolist(),
        },
        indent=1,
    )
)
