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


def test_license_duties_parse_and_the_notice_reaches_both_clients():
    # The SDK's Model keeps modelgate's fields as extras; the duties are plain JSON there.
    models = {m.id: m for m in oa().models.list().data}
    llama = models["llama-3.1-8b-instruct"]
    assert llama.object == "model" and llama.owned_by == "Meta"
    lic = llama.model_extra["license"]
    assert lic["notice"] == "Built with Llama"
    assert [d["kind"] for d in lic["duties"]] == ["display", "license_copy", "notice", "use_policy"]
    assert "©" in lic["duties"][2]["text"]
    assert "notice" not in models["claude-sonnet-4-5"].model_extra["license"]
    msgs = [{"role": "user", "content": "Say hello"}]
    r = oa().chat.completions.with_raw_response.create(model="llama-3.1-8b-instruct", messages=msgs)
    assert r.headers["x-modelgate-license-notice"] == "Built with Llama"
    with oa().chat.completions.with_streaming_response.create(
            model="llama-3.1-8b-instruct", messages=msgs, stream=True) as r:
        assert r.headers["x-modelgate-license-notice"] == "Built with Llama"
        assert "Hello" in "".join(r.iter_lines())
    m = an().messages.with_raw_response.create(model="llama-3.1-8b-instruct", max_tokens=100, messages=msgs)
    assert m.headers["x-modelgate-license-notice"] == "Built with Llama"
    m = an().messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=100, messages=msgs)
    assert "x-modelgate-license-notice" not in m.headers


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


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "llama-3.1-8b-instruct"])
@pytest.mark.parametrize("stream", [False, True])
def test_several_choices_each_by_its_index(model, stream):
    # The fakes answer choice i with one more word than choice i - 1 ("… more").
    want = {0: "Hello from the fake", 1: "Hello from the fake more"}
    messages = [{"role": "user", "content": "Say hello"}]
    if not stream:
        c = oa().chat.completions.create(model=model, n=2, messages=messages)
        assert {ch.index: ch.message.content for ch in c.choices} == want
        assert [ch.finish_reason for ch in c.choices] == ["stop", "stop"]
        return
    texts, finishes = {}, {}
    for chunk in oa().chat.completions.create(model=model, n=2, messages=messages, stream=True):
        for ch in chunk.choices:
            assert ch.index not in finishes, "a choice went on after its finish reason"
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert texts == want
    assert finishes == {0: "stop", 1: "stop"}


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_geminis_retry_delay_reaches_the_client(client):
    # tests/sdk.rs scripts gemini-2.5-pro's upstream to answer 429 with RetryInfo "6.2s".
    messages = [{"role": "user", "content": "hi"}]
    if client == "openai":
        with pytest.raises(openai.RateLimitError) as e:
            oa().chat.completions.create(model="gemini-2.5-pro", messages=messages)
    else:
        with pytest.raises(anthropic.RateLimitError) as e:
            an().messages.create(model="gemini-2.5-pro", max_tokens=16, messages=messages)
    # 7 from Gemini's own 6.2 s; less when the gateway's cool-down from the first 429 answers.
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 7


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_stop_sequence_is_named(stream):
    args = dict(model="claude-sonnet-4-5", max_tokens=64, stop_sequences=["fake"],
                messages=[{"role": "user", "content": "Say hello"}])
    if stream:
        with an().messages.stream(**args) as s:
            m = s.get_final_message()
    else:
        m = an().messages.create(**args)
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "fake")
    assert m.content[0].text == "Hello from the "
    # An OpenAI-format client hears "stop", as OpenAI says it.
    c = oa().chat.completions.create(model="claude-sonnet-4-5", stop=["fake"],
                                     messages=[{"role": "user", "content": "Say hello"}])
    assert c.choices[0].finish_reason == "stop"
    assert c.choices[0].message.content == "Hello from the "


def test_message_start_carries_anthropics_own_input_count():
    # The fake Anthropic reports 21 input tokens and 4 read from cache; the gateway's own
    # estimate of "Say hello" would be a few.
    with an().messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                              messages=[{"role": "user", "content": "Say hello"}]) as s:
        starts = [e.message.usage for e in s if e.type == "message_start"]
    assert [(u.input_tokens, u.cache_read_input_tokens) for u in starts] == [(21, 4)]


def test_a_field_openai_refuses_never_reaches_openai():
    # gpt-4o is of kind openai: Anthropic's top_k is refused here, not sent to be refused there.
    with pytest.raises(anthropic.BadRequestError) as e:
        an().messages.create(model="gpt-4o", max_tokens=16, extra_body={"top_k": 5},
                             messages=[{"role": "user", "content": "hi"}])
    assert "top_k" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oa().chat.completions.create(model="gpt-4o", extra_body={"top_k": 5},
                                     messages=[{"role": "user", "content": "hi"}])
    assert "top_k" in str(e.value)
    # A server that takes it gets it; OpenAI's own fields still reach OpenAI.
    c = oa().chat.completions.create(model="llama-3.1-8b-instruct", extra_body={"top_k": 5},
                                     messages=[{"role": "user", "content": "hi"}])
    assert c.choices[0].message.content == "Hello from the fake"
    c = oa().chat.completions.create(model="gpt-4o", seed=7, messages=[{"role": "user", "content": "hi"}])
    assert c.choices[0].message.content == "Hello from the fake"


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_an_estimated_output_stays_within_max_tokens(client):
    # qwen3-8b's server sends no usage in streams and more text than the two tokens asked for
    # (tests/sdk.rs): the gateway estimates, within what was asked.
    messages = [{"role": "user", "content": "Say hello"}]
    if client == "openai":
        usage = [c.usage for c in oa().chat.completions.create(
            model="qwen3-8b", max_tokens=2, messages=messages, stream=True,
            stream_options={"include_usage": True}) if c.usage]
        assert len(usage) == 1 and 1 <= usage[0].completion_tokens <= 2
    else:
        with an().messages.stream(model="qwen3-8b", max_tokens=2, messages=messages) as s:
            m = s.get_final_message()
        assert 1 <= m.usage.output_tokens <= 2
