"""The official openai SDK's Responses API client against the gateway, each request routed to
every upstream dialect (OpenAI-compatible, Anthropic, Gemini). Run by tests/sdk.rs, which starts
strict fake upstreams and the gateway and passes its address in MODELGATE_URL."""

import json
import os

import openai
import pytest

URL = os.environ.get("MODELGATE_URL")
pytestmark = pytest.mark.skipif(not URL, reason="run by tests/sdk.rs")

# gpt-4o is served by OpenAI's own Responses API (the fake's); the others are translated.
MODELS = ["llama-3.1-8b-instruct", "claude-sonnet-4-5", "gemini-2.5-flash", "gpt-4o"]
REASONING_TOKENS = {"gemini-2.5-flash": 2, "gpt-4o": 5}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"], "additionalProperties": False},
          "strict": True}]


def oa():
    return openai.OpenAI(base_url=f"{URL}/v1", api_key="unused", max_retries=0, timeout=20)


@pytest.mark.parametrize("model", MODELS)
def test_create(model):
    r = oa().responses.with_raw_response.create(model=model, instructions="Be brief.", input="Say hello")
    assert r.headers["x-modelgate-model"] == model
    resp = r.parse()
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text == "Hello from the fake"
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    # Gemini and OpenAI's reasoning report their thinking tokens; the others none.
    assert resp.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS.get(model, 0)


@pytest.mark.parametrize("model", MODELS)
def test_stream_accumulates_text(model):
    with oa().responses.stream(model=model, input="Say hello") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello from the fake"
    assert final.output_text == "Hello from the fake"
    assert final.status == "completed"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True])
def test_function_call_round_trip(model, streamed):
    c = oa()
    if streamed:
        with c.responses.stream(model=model, input="Weather in Paris?", tools=TOOLS) as s:
            for _ in s:
                pass
            first = s.get_final_response()
    else:
        first = c.responses.create(model=model, input="Weather in Paris?", tools=TOOLS)
    calls = [i for i in first.output if i.type == "function_call"]
    assert len(calls) == 1, first.output
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"] == "Paris"
    # Continued from the stored response: only the tool's output is sent.
    second = c.responses.create(
        model=model, previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp": 21}'}])
    assert second.output_text == "Hello from the fake"
    assert second.previous_response_id == first.id


@pytest.mark.parametrize("model", MODELS)
def test_conversation_retrieve_and_delete(model):
    c = oa()
    first = c.responses.create(model=model, input="My name is Ada.")
    second = c.responses.create(model=model, input="What is my name?", previous_response_id=first.id)
    got = c.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == "Hello from the fake"
    items = c.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]
    c.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(second.id)


def test_built_in_tool_goes_only_to_openai():
    # llama-3.1-8b-instruct is served by vLLM-like servers only: refused, naming the tool.
    with pytest.raises(openai.BadRequestError) as e:
        oa().responses.create(model=MODELS[0], input="hi", tools=[{"type": "web_search"}])
    assert e.value.body["code"] == "unsupported_tool"
    assert "web_search" in e.value.body["message"]
    # gpt-4o is served by OpenAI's own API, which runs it.
    r = oa().responses.create(model="gpt-4o", input="news?", tools=[{"type": "web_search"}])
    assert r.status == "completed" and r.output_text == "Hello from the fake"


def test_unknown_previous_response_is_not_found():
    with pytest.raises(openai.NotFoundError):
        oa().responses.create(model=MODELS[0], input="hi", previous_response_id="resp_0000")


@pytest.mark.parametrize("model", MODELS)
def test_agents_sdk_runs_an_agent_with_a_function_tool(model):
    """The OpenAI Agents SDK (Responses API by default) runs one agent with one tool."""
    import agents
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=f"{URL}/v1", api_key="unused", max_retries=0, timeout=20)
    agent = agents.Agent(
        name="weather", instructions="Answer with the tool's help.", tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=model, openai_client=client))
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?")
    assert calls == ["Paris"]
    assert result.final_output == "Hello from the fake"
