"""Chat message validation and template rendering (mlos_core.chat)."""
from __future__ import annotations

import pytest

from mlos_core import chat
from mlos_core.errors import BadRequest

CONVO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
]


# ---- validation --------------------------------------------------------------------------------

def test_validate_normalises_text_parts():
    out = chat.validate_messages([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                {"type": "text", "text": "b"}], "name": "x"}])
    assert out == [{"role": "user", "content": "a\nb", "name": "x"}]


def test_validate_assistant_tool_call_without_content():
    out = chat.validate_messages([{"role": "user", "content": "q"},
                                  {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                                  {"role": "tool", "content": "42", "tool_call_id": "1"}])
    assert out[1]["content"] == "" and out[2]["role"] == "tool"


@pytest.mark.parametrize("messages, expected", [
    ([], "messages is empty: give at least one message"),
    ("hi", "messages must be a list of {\"role\", \"content\"} objects, got str"),
    ([{"role": "robot", "content": "x"}],
     "messages[0].role 'robot' is not a chat role; use one of: system, user, assistant, tool"),
    ([{"content": "x"}], "messages[0].role missing is not a chat role; use one of: system, user, assistant, tool"),
    ([{"role": "user"}], "messages[0] has no content"),
    ([{"role": "user", "content": 3}], "messages[0].content must be a string or a list of text parts, got int"),
    ([{"role": "user", "content": None}], "messages[0].content must be a string or a list of text parts, got NoneType"),
    ([{"role": "user", "content": "ok"},
      {"role": "user", "content": [{"type": "text", "text": "a"},
                                   {"type": "image_url", "image_url": {"url": "data:..."}}]}],
     "messages[1].content[1] is an image part ('image_url'): this model takes text only"),
    ([{"role": "user", "content": [{"type": "input_audio"}]}],
     "messages[0].content[0] has type 'input_audio': this model takes text only (content parts of type 'text')"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text must be a string, got int"),
    ([{"role": "user", "content": []}], "messages[0].content is an empty list; give a string or text parts"),
    (["hi"], "messages[0] must be an object with role and content, got str"),
])
def test_validate_rejects(messages, expected):
    with pytest.raises(BadRequest) as e:
        chat.validate_messages(messages)
    assert e.value.message == expected


# ---- built-in templates --------------------------------------------------------------------------

def test_builtin_lookup_and_selection():
    for arch in ("gemma", "gemma2", "gemma3"):
        assert chat.builtin_template(arch) is chat.GEMMA
    assert chat.builtin_template("llama") is chat.LLAMA3
    assert chat.builtin_template("qwen2") is chat.builtin_template("qwen3") is chat.CHATML
    assert chat.builtin_template("phi3") is chat.PHI3
    assert chat.builtin_template("mistral") is chat.MISTRAL
    assert chat.builtin_template("mamba") is None and chat.builtin_template(None) is None
    assert chat.select_template("{{x}}", "emb", "gemma3") == ("{{x}}", "override")
    assert chat.select_template(None, "emb", "gemma3") == ("emb", "gguf")
    assert chat.select_template(None, None, "gemma3") == (chat.GEMMA, "builtin:gemma3")
    assert chat.select_template(None, None, "mamba") == (chat.CHATML, "builtin:chatml")
    assert chat.turn_markers(chat.GEMMA) == ("<end_of_turn>", "<start_of_turn>")
    assert chat.turn_markers(chat.LLAMA3) == ("<|eot_id|>", "<|start_header_id|>")
    assert chat.turn_markers(chat.CHATML) == ("<|im_end|>", "<|im_start|>")


def test_render_gemma():
    out = chat.render(CONVO, chat.GEMMA, bos_token="<bos>", eos_token="<eos>")
    assert out == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                   "<start_of_turn>model\nHello!<end_of_turn>\n"
                   "<start_of_turn>user\nCapital of France?<end_of_turn>\n"
                   "<start_of_turn>model\n")
    no_prompt = chat.render(CONVO[1:2], chat.GEMMA, add_generation_prompt=False)
    assert no_prompt == "<start_of_turn>user\nHi<end_of_turn>\n"


def test_render_llama3():
    out = chat.render(CONVO[:2], chat.LLAMA3, bos_token="<|begin_of_text|>")
    assert out == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_render_chatml():
    out = chat.render(CONVO[:2], chat.CHATML)
    assert out == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_render_phi3():
    out = chat.render(CONVO[1:3], chat.PHI3)
    assert out == "<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|assistant|>\n"


def test_render_mistral():
    out = chat.render(CONVO, chat.MISTRAL, bos_token="<s>", eos_token="</s>")
    assert out == "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] Capital of France? [/INST]"


def test_builtin_template_enforces_alternation():
    with pytest.raises(BadRequest) as e:
        chat.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], chat.GEMMA)
    assert e.value.message == ("the chat template refused the messages: "
                               "Conversation roles must alternate user/assistant/user/assistant/...")


# ---- untrusted templates ---------------------------------------------------------------------------

def test_hf_style_raise_exception_is_bad_request():
    template = ("{% if messages[0]['role'] != 'system' %}"
                "{{ raise_exception('System message required') }}{% endif %}ok")
    with pytest.raises(BadRequest) as e:
        chat.render([{"role": "user", "content": "x"}], template)
    assert e.value.message == "the chat template refused the messages: System message required"
    assert chat.render(CONVO, template) == "ok"


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os }}",
])
def test_hostile_template_is_refused(template):
    with pytest.raises(BadRequest) as e:
        chat.render([{"role": "user", "content": "x"}], template)
    assert "unsafe" in e.value.message


def test_template_cannot_reach_internals_or_mutate():
    # an unsafe attribute alone renders as nothing rather than leaking the class
    assert chat.render([{"role": "user", "content": "x"}], "[{{ ''.__class__ }}]") == "[]"
    with pytest.raises(BadRequest) as e:
        chat.render([{"role": "user", "content": "x"}], "{{ messages.append(1) }}")
    assert "unsafe" in e.value.message


def test_template_syntax_and_runtime_errors():
    with pytest.raises(BadRequest) as e:
        chat.render([{"role": "user", "content": "x"}], "{% for m in messages %}")
    assert e.value.message.startswith("the chat template is not valid Jinja: ")
    with pytest.raises(BadRequest) as e:
        chat.render([{"role": "user", "content": "x"}], "{{ messages[0]['content'] + 1 }}")
    assert e.value.message.startswith("the chat template failed: ")


def test_template_helpers_available():
    out = chat.render([{"role": "user", "content": "é"}],
                      "{{ messages[0] | tojson }}|{{ strftime_now('%Y') | length }}"
                      "{% for m in messages %}{% break %}{% endfor %}")
    assert out == '{"role": "user", "content": "é"}|4'
