"""The official openai and anthropic SDKs against the gateway, each routed to every upstream
dialect (OpenAI-compatible, Anthropic, Gemini). Run by tests/sdk.rs, which starts strict fake
upstreams and the gateway and passes its address in MODELGATE_URL."""

import json
import os

import anthropic
import openai
import pytest

URL = os.environ.get("MODELGATE_URL")
pytestmark = pytest.mark.skipif(not URL, reason="run by tests/sdk.rs")

MODELS = ["llama-3.1-8b-instruct", "claude-sonnet-4-5", "gemini-2.5-flash"]
VISION = ["claude-sonnet-4-5", "gemini-2.5-flash"]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="


def oa():
    return openai.OpenAI(base_url=f"{URL}/v1", api_key="unused", max_retries=0, timeout=20)


def an():
    return anthropic.Anthropic(base_url=URL, api_key="unused", max_retries=0, timeout=20)


@pytest.mark.parametrize("model", MODELS)
def test_openai_plain(model):
    r = oa().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}])
    assert r.headers["x-modelgate-model"] == model
    c = r.parse()
    assert c.choices[0].message.content == "Hello from the fake"
    assert c.choices[0].finish_reason == "stop"
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_openai_streamed(model):
    text, finish, usage = "", None, None
    for chunk in oa().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}],
            stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from the fake"
    assert finish == "stop"
    assert usage and usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_round_trip(model, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        calls = {}
        finish = None
        for chunk in oa().chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True):
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = tc.id or call["id"]
                if tc.function and tc.function.name:
                    call["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
        assert finish == "tool_calls"
        assert list(calls) == [0]
        call = calls[0]
    else:
        c = oa().chat.completions.create(model=model, messages=messages, tools=TOOLS)
        assert c.choices[0].finish_reason == "tool_calls"
        tc = c.choices[0].message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "21C, sunny"},
    ]
    c = oa().chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert c.choices[0].message.content == "Hello from the fake"


@pytest.mark.parametrize("model", VISION)
def test_openai_image_input(model):
    c = oa().chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert c.choices[0].message.content == "Hello from the fake"


def test_openai_image_to_a_text_only_model_is_refused():
    with pytest.raises(openai.PermissionDeniedError):
        oa().chat.completions.create(model="llama-3.1-8b-instruct", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": PNG}}]}])


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_plain(model):
    m = an().messages.create(model=model, max_tokens=100, system="Be brief.",
                             messages=[{"role": "user", "content": "Say hello"}])
    assert m.content[0].text == "Hello from the fake"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_streamed(model):
    with an().messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from the fake"
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tools(model, stream):
    tools = [{"name": "get_weather", "description": "Current weather",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with an().messages.stream(model=model, max_tokens=100, messages=messages, tools=tools) as s:
            m = s.get_final_message()
    else:
        m = an().messages.create(model=model, max_tokens=100, messages=messages, tools=tools)
    assert m.stop_reason == "tool_use"
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21C, sunny"}]},
    ]
    m = an().messages.create(model=model, max_tokens=100, messages=messages, tools=tools)
    assert m.content[0].text == "Hello from the fake"


def test_anthropic_errors():
    with pytest.raises(anthropic.NotFoundError):
        an().messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("model", ["text-embedding-3-small", "gemini-embedding-001"])
def test_openai_embeddings(model):
    # The SDK asks for base64 by default and decodes it.
    r = oa().embeddings.create(model=model, input=["hello", "abc"])
    assert [d.embedding for d in r.data] == [[5.0, 104.0, 0.5, -0.25], [3.0, 97.0, 0.5, -0.25]]
    assert r.usage.prompt_tokens > 0
    r = oa().embeddings.create(model=model, input="abc", encoding_format="float")
    assert r.data[0].embedding == [3.0, 97.0, 0.5, -0.25]


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "llama-3.1-8b-instruct"])
def test_anthropic_count_tokens(model):
    r = an().messages.count_tokens(model=model, messages=[{"role": "user", "content": "Hello there"}])
    assert r.input_tokens > 0


# Translation fidelity (issue 18), each with the official client.

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_names_the_model_the_gateway_chose(model, stream):
    # The OpenAI-compatible backend calls its model by a file path (tests/sdk.rs sets it).
    if stream:
        models = {c.model for c in oa().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True)}
    else:
        models = {oa().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]).model}
    assert models == {model}
    m = an().messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert m.model == model and not m.id.startswith("msg_msg_")


@pytest.mark.parametrize("model", MODELS)
def test_an_image_a_tool_returned_is_carried(model):
    tools = [{"name": "screenshot", "description": "takes one", "input_schema": {"type": "object", "properties": {}}}]
    png = PNG.split(",", 1)[1]
    messages = [
        {"role": "user", "content": "What is on screen?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "the screen"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]}]},
    ]
    if model not in VISION:
        # The image is not dropped to make it fit: a text-only model refuses the request.
        with pytest.raises(anthropic.PermissionDeniedError) as e:
            an().messages.create(model=model, max_tokens=50, tools=tools, messages=messages)
        assert "images" in str(e.value)
        return
    m = an().messages.create(model=model, max_tokens=50, tools=tools, messages=messages)
    assert m.content[0].text == "Hello from the fake"


@pytest.mark.parametrize("model", MODELS)
def test_structured_output_from_both_clients(model):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    m = an().messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": "Where?"}],
                             extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert m.content[0].text == "Hello from the fake"
    c = oa().chat.completions.create(model=model, messages=[{"role": "user", "content": "Where?"}],
                                     response_format={"type": "json_schema",
                                                      "json_schema": {"name": "out", "schema": schema}})
    assert c.choices[0].message.content == "Hello from the fake"


def test_max_tokens_zero_warms_anthropic_and_is_refused_elsewhere():
    m = an().messages.create(model="claude-sonnet-4-5", max_tokens=0,
                             messages=[{"role": "user", "content": "long shared context"}])
    assert m.type == "message"
    with pytest.raises(anthropic.BadRequestError) as e:
        an().messages.create(model="llama-3.1-8b-instruct", max_tokens=0,
                             messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in str(e.value)
