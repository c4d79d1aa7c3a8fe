"""Chat prompt rendering, independent of the model format.

A chat request is a list of ``{"role", "content"}`` messages; a decoder model needs one prompt
string. ``validate_messages`` checks and normalises the messages, ``render`` turns them into the
prompt with a Jinja chat template (the Hugging Face convention: ``messages``, ``bos_token``,
``eos_token``, ``add_generation_prompt`` and ``raise_exception`` are in scope).

Templates come from model files, so they are never trusted: they run in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation of the
arguments), and anything they raise becomes a ``BadRequest`` with the template's message.

``select_template`` picks the template a model chats with: an override given at registration,
else the model's own (GGUF ``tokenizer.chat_template``, ``tokenizer_config.json``...), else a
built-in one for the model's architecture, else ChatML.
"""
from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, Sequence

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import BadRequest

ROLES = ("system", "user", "assistant", "tool")
_IMAGE_PARTS = ("image_url", "input_image", "image")

# ---- built-in templates ------------------------------------------------------------------------

# Gemma (1, 2, 3): no system role; the system message is folded into the first user turn, the
# assistant is called "model". Same text as Google's own template for string contents.
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set first_user_prefix = '' %}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Llama 3 / 3.1 / 3.2 header format; tool results use Llama 3.1's "ipython" role.
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{ '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# ChatML: Qwen 2/2.5/3 and the generic fallback.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Phi-3 / Phi-3.5.
PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Mistral instruct ([INST] ... [/INST]); no system role: folded into the first user turn.
MISTRAL = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set system_message = '' %}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system_message %}{{ '[INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

_BUILTIN = {
    "gemma": GEMMA, "gemma2": GEMMA, "gemma3": GEMMA, "gemma3n": GEMMA,
    "llama": LLAMA3, "llama3": LLAMA3,
    "qwen2": CHATML, "qwen2moe": CHATML, "qwen3": CHATML, "qwen3moe": CHATML,
    "phi3": PHI3,
    "mistral": MISTRAL, "mistral3": MISTRAL,
}

# Markers that end a turn or begin the next one, by template family: a chat generation stops at
# them (runtimes stop at end-of-turn tokens already; a base model may instead go on to write the
# next turn's header, which these catch).
_TURN_MARKERS = ("<end_of_turn>", "<start_of_turn>", "<|eot_id|>", "<|start_header_id|>", "<|im_end|>",
                 "<|im_start|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "[INST]")


def builtin_template(architecture: str | None) -> str | None:
    """The built-in chat template for a model architecture (GGUF ``general.architecture``,
    config.json ``model_type``), or None when there is none for it."""
    return _BUILTIN.get((architecture or "").strip().lower())


def select_template(override: str | None, embedded: str | None, architecture: str | None,
                    embedded_source: str = "gguf") -> tuple[str, str]:
    """The template to chat with and where it came from: ``"override"``, ``embedded_source``
    (the model file's own), ``"builtin:<arch>"`` or ``"builtin:chatml"``."""
    if override:
        return override, "override"
    if embedded:
        return embedded, embedded_source
    builtin = builtin_template(architecture)
    if builtin is not None:
        return builtin, f"builtin:{architecture.strip().lower()}"
    return CHATML, "builtin:chatml"


def turn_markers(template: str) -> tuple[str, ...]:
    """The known turn markers a template writes (for Gemma ``<end_of_turn>`` and
    ``<start_of_turn>``): the assistant's reply ends where one of them would appear."""
    return tuple(m for m in _TURN_MARKERS if m in template)


end_of_turn_markers = turn_markers  # the name mlos_core.tasks.generation uses


# ---- validation --------------------------------------------------------------------------------

def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if not content:
            raise BadRequest(f"{where}.content is an empty list; give a string or text parts")
        texts = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            if not isinstance(part, dict):
                raise BadRequest(f"{at} must be an object like {{\"type\": \"text\", \"text\": \"...\"}}, "
                                 f"got {type(part).__name__}")
            kind = part.get("type")
            if kind in _IMAGE_PARTS:
                raise BadRequest(f"{at} is an image part ({kind!r}): this model takes text only")
            if kind != "text":
                raise BadRequest(f"{at} has type {kind!r}: this model takes text only "
                                 "(content parts of type 'text')")
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"{at}.text must be a string, got {type(text).__name__}")
            texts.append(text)
        return "\n".join(texts)
    raise BadRequest(f"{where}.content must be a string or a list of text parts, got {type(content).__name__}")


def validate_messages(messages: Any) -> list[dict]:
    """Check chat messages and normalise them to ``{"role": str, "content": str}`` dicts (other
    keys, e.g. ``name`` or ``tool_call_id``, are kept). Raises ``BadRequest`` naming the fault."""
    if not isinstance(messages, (list, tuple)):
        raise BadRequest(f"messages must be a list of {{\"role\", \"content\"}} objects, got {type(messages).__name__}")
    if not messages:
        raise BadRequest("messages is empty: give at least one message")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with role and content, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            shown = repr(role) if role is not None else "missing"
            raise BadRequest(f"{where}.role {shown} is not a chat role; use one of: {', '.join(ROLES)}")
        if "content" not in message:
            raise BadRequest(f"{where} has no content")
        content = message["content"]
        if content is None and role == "assistant" and message.get("tool_calls"):
            content = ""  # an assistant turn that only called tools
        normalised = dict(message)
        normalised["role"] = role
        normalised["content"] = _content_text(content, where)
        out.append(normalised)
    return out


# ---- rendering ---------------------------------------------------------------------------------

class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str = "the chat template refused the messages"):
    raise _TemplateRaised(str(message))


def _tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=64)
def _compile(template: str):
    try:
        return _environment().from_string(template)
    except TemplateError as e:
        raise BadRequest(f"the chat template is not valid Jinja: {e}") from None


def render(messages: Sequence[dict], template: str, *, bos_token: str = "", eos_token: str = "",
           add_generation_prompt: bool = True, **extra: Any) -> str:
    """Render validated messages with a chat template into the prompt text. ``extra`` is passed
    to the template too (e.g. ``tools``)."""
    messages = validate_messages(messages)
    compiled = _compile(template)
    try:
        return compiled.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt, **extra)
    except _TemplateRaised as e:
        raise BadRequest(f"the chat template refused the messages: {e}") from None
    except SecurityError as e:
        raise BadRequest(f"the chat template attempted an unsafe operation and was stopped: {e}") from None
    except TemplateError as e:
        raise BadRequest(f"the chat template failed: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as e:
        raise BadRequest(f"the chat template failed: {type(e).__name__}: {e}") from None

