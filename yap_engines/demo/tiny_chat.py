"""The offline demo chat model: built locally in seconds, no model hub needed.

`build_demo_chat(dest)` trains a byte-level BPE tokenizer on a small embedded corpus, wraps it in a
`PreTrainedTokenizerFast` with a ChatML chat template (and the `<think>` tags as special tokens), and
saves a `LlamaForCausalLM` with random weights from a fixed seed. Its text is gibberish, but every
code path that matters here is real: chat templates, tokenization, streaming, abort, the prefix
cache, structured outputs and quantization.

The shape is chosen for vLLM's CPU build: head size 64 (the CPU attention kernel rejects 16), and
`max_position_embeddings` 8192, above the default context (5025 prompt + 150 output tokens).
The build is deterministic: the same seed gives byte-identical weights and tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import BackendUnavailableError
from ..settings import DEMO_CHAT_NAME

DEMO_CHAT_MAX_POSITIONS = 8192

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

_CORPUS = """\
Hello! How can I help you today? I am a voice assistant, and I answer in short sentences.
Sure, let me take a look at your screen. One moment please.
The weather today is sunny with a light breeze, perfect for a walk in the park.
Could you say that again? I did not quite catch the last part.
Here is a quick summary: the meeting moved to Tuesday at three in the afternoon.
Thanks for asking! I think the answer is forty two, but let me double check.
<think>The user wants a short answer. Keep it friendly and brief.</think>Of course, happy to help.
{"answer": "yes", "confidence": 0.9, "items": [1, 2, 3], "ok": true, "note": null}
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Punctuation: , . ; : ! ? ' " ( ) [ ] { } - _ / \\ @ # % & * + = < >
What time is it? It is a quarter past nine. Would you like me to set a reminder?
I can see a code editor with a Python file open; the function on line twelve raises an error.
"""


def staging_dir(dest: Path) -> Path:
    """A fresh `<dest>.partial` to build into (a crashed build's leftovers removed)."""
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, dest: Path) -> Path:
    """Move a finished build from `tmp` into place at `dest`, replacing an older one."""
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def _require_build_deps() -> None:
    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"building the demo model needs torch, transformers and tokenizers ({exc.name} is missing): "
            'run `make install` or `pip install "yap[cpu]"`'
        ) from exc


def build_demo_tokenizer(vocab_size: int = 384):  # type: ignore[no-untyped-def]
    """Train the demo byte-level BPE tokenizer and return it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_demo_chat(dest: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the demo chat model into `dest` (a Hugging Face model directory) and return its path.

    Does nothing when `dest` already holds a complete build, unless `overwrite` is set.
    """
    dest = Path(dest)
    if is_built(dest) and not overwrite:
        return dest
    _require_build_deps()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_demo_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=DEMO_CHAT_MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[arg-type]

    tmp = staging_dir(dest)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "yap_demo.json").write_text(json.dumps({"name": DEMO_CHAT_NAME, "seed": seed}) + "\n")
    return publish_dir(tmp, dest)


def is_built(path: str | Path) -> bool:
    """True when `path` holds a finished demo build (config, weights, tokenizer, marker)."""
    path = Path(path)
    return all(
        (path / name).exists() for name in ("config.json", "model.safetensors", "tokenizer.json", "yap_demo.json")
    )
